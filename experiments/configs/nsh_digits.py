"""NSH on the embedded digits data set (methods.md §2.2; the ``digits`` preset of ``--method=nsh``).

Command (one bit length per run)::

  python -m unhash_jax.main --method=nsh --dataset=digits --bits=32

which resolves to this config. Tuning record, validation split only (the protocol's 10 % validation
queries ranked against the rest of the training split), 32 bits, shared and loaded 2-core machine.

First sweep, with the framework's full ``digits`` augmentation preset, ``python -m unhash_jax.main
--method=nsh --bits=32 --steps=S --eval_every=250 ...``:

=====================================================  =============================================
setting                                                validation mAP@all at steps 250/500/750/1000
=====================================================  =============================================
lr 1e-4, batch 64, λ_q 0.1 (1500 steps)                –/0.591/–/0.562, 0.554 at 1500
lr 1e-4, batch 64, λ_q 1 (paper constant)              0.424/0.445/0.494/0.510
lr 3e-5, batch 64, λ_q 0.1                             0.518/0.554/0.563/0.577
**lr 1e-3, batch 128, λ_q 0.1** (old, 1000 steps)      0.507/0.578/0.624/**0.625**
same, continued to 2500 steps                          0.610 at 1500, 0.576 at 2000, 0.575 at 2500
=====================================================  =============================================

Second sweep (this preset), same harness and split, 32 bits, seed 0 unless noted, machine loaded
4–7. "digits_light" is the augmentation preset NSH now uses on digits (rotation ±8°, zoom 0.92–1.08,
shift ±0.5 px, intensity 0.8–1.2, noise 0.05, no erasing). ``backbone_lr_scale`` multiplies the
backbone's learning rate (model option; the heads keep ``learning_rate``). Columns: validation
mAP@all at the listed steps, and bit balance at the last step.

==============================================================  ==========================================  =======
setting (batch 128, λ_q 0.1, MLP 512, lr 1e-3 unless noted)     val mAP at steps                            balance
==============================================================  ==========================================  =======
previous preset (digits views), rerun                           250/500/750/1000: .507/.578/.624/.625       0.34
τ_sort 1/128 (= 1/(4K))                                         .571/.589/.615/.611                         0.11
batch 256 (stopped: 0.5 steps/s under load)                     250: .552                                   —
backbone_lr_scale 0.1                                           .508/.506/.548/.540                         0.34
lr 3e-4, backbone_lr_scale 3.33 (backbone 1e-3, heads 3e-4)     .562/.564/.578/.593                         0.24
latent_dim 128                                                  .511/.580/.603/.610                         0.34
frozen random MLP backbone, hidden 2048                         .535/.535/.510/.532                         0.63
frozen ``flatten`` (pixel) backbone, latent_dim 128             .517/.511/.494/.495                         0.22
stronger views (±20°, zoom 0.8–1.2, ±1 px, ×0.6–1.4, σ 0.1,     .510/.517/.524/.527                         0.48
erase p 0.5)
lighter still (±5°, zoom 0.95–1.05, no shift, ×0.9–1.1, σ 0.02) .416/.410/.405/.394                         0.25
digits_light                                                    .637/.602/.610/.588                         0.29
digits_light, τ_sort 1/128                                      125–750: .533/.544/.521/.533/.517/.522      0.11
digits_light (steps 100–500)                                    100–500: .662/.646/.619/.612/.602           0.31
digits_light, seed 1                                            .592/.631/.575/.592/.603                    0.33
digits_light, lr 1e-4                                           .560/.618/.639/.644/.645                    0.16
**digits_light, lr 3e-4** (chosen, 200 steps)                   .645/**.659**/.632/.630/.633                0.21
digits_light, lr 3e-4, seed 1                                   .614/**.643**/.635/.638/.637                0.22
==============================================================  ==========================================  =======

At 64 bits (validation only, seed 0) the change does not carry over: the chosen preset gives
.606/.624/.616/.617/.604 at steps 100–500, the previous preset .592/.626/.645/.655 at steps
250–1000, so the new preset is 0.03 worse at 64 bits while 0.03 better at 32.

Freezing the backbone (as the paper does with its pretrained ResNet-50) does not help here: with
random or pixel features the heads still collapse (balance 0.63 with random ReLU features) and no
code ranks an image's own other view first more often than ~10 % of the time ("self top-1" stays
0.08–0.10 in every run of this sweep), so the sorted positives stay mostly other images. The chosen
preset gains about 0.03 validation mAP over the previous one (mean of two seeds at 200 steps: 0.651)
and trains 5× fewer steps; it remains far below the 0.80 target.

Earlier sweep with a stand-in augmentation (±1 px shift, ×U(0.7, 1.3) intensity, N(0, 0.1) noise),
written before the framework's ``digits`` augmentation existed; trained on the training split minus
the validation queries, 32 bits, 600 steps:

============================================  ========  ===========  ==========
setting (batch 64 unless noted)               val mAP   bit balance  self top-1
============================================  ========  ===========  ==========
lr 1e-3, paper loss constants                 0.427     0.74         0.08
lr 1e-3, λ_q 0.1                              0.485     0.47         0.06
lr 1e-3, λ_q 0                                0.474     0.36         0.05
lr 1e-3, λ_q 0.1, τ_sort 0.25                 0.372     0.09         0.06
lr 1e-3, λ_q 0.1, τ_sort 1                    0.265     0.05         0.05
lr 1e-3, λ_q 0.1, τ_nce 0.1                   0.474     0.35         0.13
lr 1e-3, λ_q 0.1, m 1                         0.476     0.34         0.06
lr 1e-3, sort_hard, τ_sort 32 (2nd port)      0.104     1.00 (all codes equal)
lr 1e-3, sort_hard, τ_sort 1                  0.104     1.00 (all codes equal)
lr 1e-4, paper loss constants                 0.412     0.64         0.06
**lr 1e-4, λ_q 0.1**                          **0.513** 0.17         0.08
lr 3e-3, λ_q 0.1                              0.417     0.61         0.08
lr 1e-3, batch 128, 1000 steps, paper         0.445     0.73         0.05
CIBHash preset constants, batch 64 (same      0.710     0.02
harness, for comparison)
============================================  ========  ===========  ==========

"bit balance" is mean_k (mean_n sign b_nk)² on the last batch (0 = balanced, 1 = every image has
the same code); "self top-1" the fraction of anchors whose most similar view-2 code is their own.
With free code parameters and fixed, self-aligned latents the same loss drives self top-1 to
0.8–1.0 within 300 Adam steps, so the sorter's gradient is sound; the failure mode on digits is the
joint drift of a from-scratch backbone, latent head and hash head towards a few shared codes.
NSH as specified does not reach the issue's 0.80 target here (see the README rows).
"""

from unhash_jax.config import Config


def get_config(bits: int = 32) -> Config:
  """The resolved digits config of ``--method=nsh --bits=<bits>`` (values filled by the preset)."""
  from unhash_jax.methods import resolve_config
  return resolve_config(Config(method="nsh", dataset="digits", bits=bits))
