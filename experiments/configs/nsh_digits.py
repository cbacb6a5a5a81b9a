"""NSH on the embedded digits data set (docs/methods.md §2.2; the ``digits`` preset of ``--method=nsh``).

Two settings, kept apart in every table below:

* **From scratch (pure NSH)**, one command per bit length, the MLP backbone trained by NSH alone::

    python -m unhash_jax.main --method=nsh --dataset=digits --bits=32

  which resolves to :func:`get_config`.

* **Pretrained backbone (the paper's setting, label-free analogue)**: NSH's heads on a frozen backbone
  that CIBHash trained on the same training images without labels (the paper uses a frozen
  ImageNet ResNet-50; digits has no pretrained network). Two commands::

    python -m unhash_jax.main --method=cibhash --backbone=mlp2 --workdir=runs/cibhash-mlp2
    python -m unhash_jax.main --method=nsh --bits=32 --backbone=mlp2 \
        --init_backbone_from=runs/cibhash-mlp2 --frozen_backbone --sort_temperature=0.25 \
        --batch_size=128 --steps=600 --eval_every=200

  which resolves to :func:`get_pretrained_config`. Only the backbone's arrays are read from the
  CIBHash checkpoint (its hash head is not used); one 32-bit CIBHash run serves every NSH bit length.

Tuning record, validation split only (the protocol's 10 % validation queries ranked against the rest
of the training split), shared and loaded 2-core machine; test mAP was measured only for the final
choices (README rows).

Third sweep (``experiments/nsh_digits_sweep.py``, one in-process run per setting, 32 bits, seed 0,
batch 128, lr 3e-4, λ_q 0.1, ``digits_light`` views unless noted; "self top-1" and "balance" are
the train-side means over the last ``log_every`` steps; wall = whole run incl. evaluations, load
3–5). τ_sort is given absolute and as a multiple of 1/K.

=====================================================  ===========================================  ======  =======  =====
setting                                                validation mAP at steps                      self    balance  wall
                                                                                                    top-1
=====================================================  ===========================================  ======  =======  =====
*From scratch, MLP (512)*
previous preset (τ_sort 1/K), 600 steps                100–600: .645/.659/.632/.630/.633/.642       0.31    0.21     98 s
hash_init_scale 3 (W_b init ×3), 600 steps             .537/.555/.557/.549/.540/.551                0.36    0.26     106 s
hash_init_scale 10                                     .510/.548/.560/.564/.559/.584                0.32    0.33     114 s
hash_init_scale 30                                     .497/.519/.552/.569/.572/.574                0.26    0.37     83 s
τ_sort 0.0625 (2/K), 300 steps                         50–300: .591/.657/.688/.703/.713/.708        0.25    0.21     53 s
τ_sort 0.125 (4/K), 300 steps                          50–300: .610/.642/.667/.697/.714/.720        0.21    0.18     57 s
τ_sort 0.25 (8/K), 300 steps                           50–300: .582/.632/.657/.681/.695/.694        0.19    0.17     81 s
**τ_sort 0.125, 600 steps** (new preset)               100–600: .642/.697/.720/.742/.746/**.749**   0.23    0.12     98 s
τ_sort 0.125, 600 steps, 16 bits                       see below
τ_sort 0.125, 600 steps, 64 bits                       see below
τ_sort 0.125, ``mlp2`` backbone (512→1024), 400 steps  100–400: .677/.731/.745/.739                 0.18    0.17     85 s
*Heads on the CIBHash-pretrained MLP (512) (CIBHash digits preset, 3000 steps, 70 s; CIBHash's own
validation mAP 0.901)*
frozen backbone, τ_sort 1/K, 200 steps                 50–200: .592/.630/.652/.653                  0.31    0.08     29 s
backbone_lr_scale 0.1, τ_sort 1/K                      .594/.641/.646/.653                          0.31    0.08     35 s
backbone fine-tuned at full lr, τ_sort 1/K             .608/.660/.646/.640                          0.30    0.11     45 s
frozen, 1000 steps                                     200–1000: .653/.644/.648/.641/.637           0.35    0.06     122 s
frozen, 1000 steps, lr 1e-3                            .628/.610/.608/.581/.565                     0.38    0.14     124 s
frozen, 300 steps, hash_init_scale 3                   100–300: .485/.511/.524                      0.36    0.13     60 s
frozen, 300 steps, τ_nce 0.1                           .537/.561/.547                               0.34    0.05     79 s
frozen, 300 steps, m 1                                 .618/.639/.626                               0.33    0.05     61 s
frozen, 300 steps, λ_q 1                               .616/.653/.662                               0.20    0.59     40 s
frozen, 300 steps, τ_sort 1/64 (0.5/K)                 .581/.594/.591                               0.35    0.05     51 s
frozen, 300 steps, τ_sort 0.0625 (2/K)                 .658/.716/.724                               0.26    0.12     53 s
frozen, 300 steps, τ_sort 0.125 (4/K)                  50–300: .651/.667/.686/.709/.724/.732        0.23    0.12     59 s
*Heads on the CIBHash-pretrained ``mlp2`` (512→1024) (CIBHash digits preset with that backbone,
3000 steps, 117–173 s; CIBHash's own validation mAP 0.904); frozen backbone*
τ_sort 1/K, 400 steps                                  100–400: .775/.708/.676/.654                 0.37    0.06     69 s
τ_sort 1/K, backbone_lr_scale 0.1 (not frozen)         .766/.696/.656/.628                          0.37    0.07     71 s
τ_sort 0.0625 (2/K), 300 steps                         50–300: .760/.815/.831/.819/.810/.788        0.27    0.07     67 s
τ_sort 0.125 (4/K), 300 steps                          50–300: .761/.804/.836/.852/.853/.860        0.23    0.06     55 s
τ_sort 0.125, 600 steps                                100–600: .804/.852/.860/.865/.852/.834       0.25    0.05     79 s
**τ_sort 0.25 (8/K), 600 steps** (chosen)              100–600: .782/.837/.853/.862/.870/**.879**   0.20    0.05     146 s
τ_sort 0.5 (16/K), 600 steps                           .748/.794/.821/.828/.841/.850                0.17    0.05     96 s
τ_sort 0.25, 600 steps, 16 bits                        .662/.808/.833/.846/.860/**.875**            0.17    0.06     92 s
τ_sort 0.25, 600 steps, 64 bits                        .759/.812/.843/.866/.875/**.884**            0.22    0.03     96 s
=====================================================  ===========================================  ======  =======  =====

Training-free references on the same validation split (sign of a linear map of fixed features):
ITQ (PCA + 50 rotation iterations) on raw pixels 0.666 at 32 bits; on the CIBHash-pretrained MLP
(512) feature 0.708/0.720/0.747 at 16/32/64 bits; on the CIBHash-pretrained ``mlp2`` feature
0.809/0.814/0.824. NSH's hash head is linear on the backbone feature, so the 512-d feature of the
one-layer MLP caps it near ITQ's level (NSH reached 0.73 there); the two-layer ``mlp2`` feature is
the one that carries it past 0.80.

What mattered: (1) the sort temperature. With τ_sort = 1/K the soft permutation is sharp and
NSH's validation mAP peaks within ~100–200 steps, then falls, from scratch and on every pretrained
backbone; 2/K–8/K keep it rising for 600 steps (4/K from scratch, 8/K on the frozen pretrained
``mlp2``). (2) A pretrained feature that a linear head can hash well (``mlp2``). A larger initial
W_b (codes near ±1 from step 0, sharp sort from the start) made things worse, as did λ_q 1 (bit
balance 0.59), τ_nce 0.1, m 1 and fine-tuning the pretrained backbone. The "self top-1" diagnostic
*falls* as mAP rises (0.31 → 0.20): with a softer sort the positives are the nearest images of the
class rather than the anchor's own view, which is what retrieval rewards, so the earlier diagnosis
(self top-1 too low) was not the limiting factor.

Final choices, measured once on the TEST split (300 queries vs the 1,497-image database, mAP@all;
the commands above, workdirs under /tmp; wall = the whole command, load average 4–6):

=================================================================  ====  =======  =====  ======
setting                                                            bits  test     P@1    wall
                                                                         mAP
=================================================================  ====  =======  =====  ======
stage 1: CIBHash, ``--backbone=mlp2`` (3000 steps; one run for     32    (0.900,  0.973  117 s
all NSH lengths; its own codes are not used by NSH)                      CIBHash)
stage 2: NSH heads on the frozen stage-1 backbone, τ_sort 0.25     16    0.854    0.917  121 s
same                                                               32    0.871    0.970  103 s
same                                                               64    0.870    0.977  110 s
NSH from scratch (preset: MLP, τ_sort 0.125, 600 steps)            16    0.714    0.877  120 s
same                                                               32    0.726    0.893  108 s
same                                                               64    0.740    0.943  107 s
=================================================================  ====  =======  =====  ======

The pretrained setting's two stages together take ~220–240 s here (each command under 3 minutes).

Re-run on a quiet machine (load 1–2) after CIBHash's step started running both views as one batch
(no BatchNorm in ``mlp2``: same model, different float rounding, so a different stage-1 run): stage 1
CIBHash 0.887 in 91 s; stage 2 at 16/32/64 bits 0.845/0.856/0.868 in 71/59/65 s; from scratch
0.714/0.726/0.740 (identical) in 61/66/59 s. These are the README's rows.

Two more from-scratch checks of the preset (validation mAP, 32 bits, quiet): 1800 steps peak at 600
and fall (300–1800: .720/.749/.736/.732/.699/.684; 156 s); batch 256 gives .713/.732/.732 at
200/400/600 steps and takes 393 s (the n³ SoftSort), no better.
The from-scratch preset stays below the issue's 0.80 target (0.726 at 32 bits); only the
CIBHash-pretrained backbone reaches it, and that backbone is CIBHash's work as much as NSH's.

Fourth sweep (2026-11-23; from scratch, preset unless noted; validation mAP at 200/400/600 steps;
quiet machine, load 1-2; ``nice -n 5 python experiments/nsh_digits_sweep.py '<json>'``):
``mlp2`` backbone .731/.739/.720 (78 s); lr 1e-3 .726/.701/.680; m = 4 .697/.736/.758 (63 s),
continued to 1000 steps .748/.742 at 800/1000 (peak at 600 again); m = 8 .691/.733/.742;
m = 16 .645/.676/.683. m = 4 is +0.009 over the preset's .749, within the seed-to-seed spread
seen earlier (~0.02), so the preset keeps m = 2 (the spec's value). Also no gain: τ_nce 0.5
.700/.726/.742; τ_nce 0.5 with m = 4 .692/.719/.746; λ_q 0 .721/.726/.738.

Fifth sweep (2026-11-23; from scratch, preset of that day = batch 128 / 600 steps unless noted; validation
mAP at the listed steps; ``nice -n 5 python experiments/nsh_digits_sweep.py '<json>'``, machine shared
with test runs, so walls are upper bounds). A diagnostic first: after the batch-128 preset the cosine
retrieval of the backbone feature scores .727 on validation, the latent z .734, the continuous tanh
code .766 and the sign code .749, so the backbone's representation, not the quantisation, was the
limit. The batch size turned out to be the lever: at n = 32 the SoftSort's n³ step costs 64× less, and
the anchor's own view is ranked first twice as often (self top-1 0.50 vs 0.23), so SortedNCE's top-m
positives are right more often and the backbone learns.

=====================================================  ===========================================  ======  =====
setting                                                validation mAP at steps                      self    wall
                                                                                                    top-1
=====================================================  ===========================================  ======  =====
full ``digits`` views (CIBHash's), 1200 steps          200–1200: .554/.530/.524/.490/.494/.495      0.08    112 s
latent_dim 128                                         200–600: .693/.737/.740                      0.23    63 s
batch 64, 1200 steps                                   200–1200: .683/.713/.727/.754/.772/.771      0.35    31 s
batch 64, τ_sort 0.0625, 1200 steps                    .693/.729/.742/.751/.757/.750                0.41    28 s
batch 64, 2400 steps                                   400–2400: .713/.754/.771/.774/.778/.785      0.36    88 s
batch 64, 2400 steps, cosine lr                        .711/.746/.762/.775/.774/.774                0.35    71 s
batch 64, 2400 steps, lr 6e-4 cosine                   .755/.773/.764/.772/.773/.772                0.36    47 s
batch 64, 5000 steps                                   1000–5000: .772/.778/.770/.750/.738          0.36    85 s
batch 32, 2400 steps                                   400–2400: .702/.733/.739/.760/.764/.776      0.50    34 s
**batch 32, 6000 steps** (new preset)                  1000–6000: .742/.764/.808/.839/.838/**.846** 0.50    70 s
same, seed 1                                           .783/.809/.819/.842/.851/**.859**            0.50    53 s
batch 32, 10000 steps                                  7000–10000: .837/.844/.846/.843              0.50    93 s
batch 32, 6000 steps, lr 1.5e-4                        .715/.749/.773/.795/.813/.825                0.52    68 s
batch 32, 6000 steps, τ_sort 0.25                      .685/.728/.729/.744/.746/.751                0.36    64 s
batch 32, 6000 steps, τ_sort 0.0625                    .771/.811/.829/.849/.844/.853 (balance .27)  0.55    54 s
batch 32, 8000 steps, cosine lr                        1000–8000: .739/.763/.792/.822/.828/.831/    0.52    88 s
                                                       .829/.826
batch 32, 6000 steps, 16 bits                          2000–6000: .780/.824/.839                    0.47    66 s
batch 32, 6000 steps, 64 bits                          2000–6000: .823/.847/.848                    0.52    66 s
batch 16, 10000 steps                                  1000–10000: .726/.745/.758/.805/.804/.825/   0.64    72 s
                                                       .839/.840/.843/.859
batch 16, 16000 steps                                  2000–16000: .745/.805/.825/.840/.859/.848/   0.65    124 s
                                                       .852/.848
=====================================================  ===========================================  ======  =====

Batch 16 reaches the same plateau (~.85) in twice the steps; a cosine learning-rate decay
(``--lr_schedule=cosine``, added for this sweep) did not help at batch 32 or 64; the full digits views
that CIBHash needs break NSH (self top-1 0.08: the code ranking no longer finds the other view).
The preset is now batch 32, 6000 steps; the pretrained setting keeps batch 128 / 600 steps (its
commands name them).

Test split, measured once for the new preset (README rows; quiet machine, load 1–2, one after the
other; ``python -m unhash_jax.main --method=nsh --bits=B``): 16 bits 0.832 (P@1 0.917, 69 s wall),
32 bits 0.834 (0.960, 67 s), 64 bits 0.842 (0.953, 79 s). The issue's 0.80 at 32 bits is met from
scratch. (The earlier statements below that it was not refer to the batch-128 preset.)

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

Second sweep (the preset before the third sweep), same harness and split, 32 bits, seed 0 unless noted, machine loaded
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
  """The resolved digits config of ``--method=nsh --bits=<bits>`` (from scratch; preset values)."""
  from unhash_jax.methods import resolve_config
  return resolve_config(Config(method="nsh", dataset="digits", bits=bits))


def get_pretraining_config() -> Config:
  """Stage 1 of the pretrained setting: CIBHash's digits preset on the ``mlp2`` backbone (32 bits)."""
  from unhash_jax.methods import resolve_config
  return resolve_config(Config(method="cibhash", dataset="digits", bits=32, backbone="mlp2"))


def get_pretrained_config(init_backbone_from: str, bits: int = 32) -> Config:
  """Stage 2: NSH's heads on the frozen backbone of the stage-1 run in ``init_backbone_from``."""
  from unhash_jax.methods import resolve_config
  return resolve_config(Config(method="nsh", dataset="digits", bits=bits, backbone="mlp2",
                               init_backbone_from=init_backbone_from, batch_size=128, steps=600,
                               eval_every=200, checkpoint_every=600,
                               hparams={"sort_temperature": 0.25},
                               model={"frozen_backbone": True}))
