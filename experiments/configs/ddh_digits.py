"""DDH on digits: the sweep behind the ``digits`` preset (validation split only, 32 bits).

Each row ran ``python experiments/nsh_digits_sweep.py '<json overrides>'`` (the harness trains on the
training split and prints the validation mAP@all at every evaluation; queries never seen). Common to
every row unless it says otherwise: ``method=ddh``, MLP backbone from scratch, pseudo labels from the
raw pixels (cosine kNN, K1 = 20), one un-augmented view (``digits_none``), batch 50, seed 0.
Measured 2026-12-02 on the 2-core CPU machine while a feature extraction shared it.

The preset (last block) gives test mAP@all 0.833 / 0.869 / 0.851 at 16 / 32 / 64 bits in 30-31 s
(``python -m unhash_jax.main --method=ddh --bits=B``).
"""

SWEEP = [
    # The release's optimisation: SGD, lr 1e-2 -> 1e-6 log-spaced per epoch, wd 5e-4, λ = 15, 20
    # epochs: the codes keep their initial, nearly all-equal signs (bit balance 0.98).
    ({"epochs": 20}, {"val": None, "test_map_32": 0.1096}),
    # SGD with a large rate (10 -> 1e-3): the loss overflows at step 7.
    ({"optimizer": "sgd", "learning_rate": 10.0, "final_learning_rate": 1e-3, "epochs": 100},
     {"val": "non-finite at step 7"}),
    # Adam, no weight decay, K2 = 30, λ = 15.
    ({"optimizer": "adam", "learning_rate": 1e-3, "lr_schedule": "constant", "steps": 3000},
     {"val": {1000: 0.5617, 2000: 0.7615, 3000: 0.7765}}),
    ({"optimizer": "adam", "learning_rate": 1e-3, "steps": 3000, "hparams": {"quantization_weight": 1.0}},
     {"val": {3000: 0.7271}}),
    ({"learning_rate": 1e-3, "lr_schedule": "constant", "steps": 15000}, {"val": {15000: 0.7763}}),
    ({"learning_rate": 1e-3, "lr_schedule": "cosine", "steps": 15000}, {"val": {15000: 0.7549}}),
    ({"learning_rate": 3e-3, "lr_schedule": "cosine", "steps": 15000}, {"val": {15000: 0.6908}}),
    ({"learning_rate": 1e-3, "lr_schedule": "cosine", "steps": 15000, "hparams": {"k2": 60}},
     {"val": {15000: 0.818}}),
    ({"learning_rate": 1e-3, "lr_schedule": "cosine", "steps": 15000, "hparams": {"k1": 10}},
     {"val": {15000: 0.7529}}),
    # Adam 1e-3 constant, 8000 steps: the shared-neighbour expansion K2 and the quantization λ.
    ({"hparams": {"k2": 100}}, {"val": {8000: 0.7374}}),
    ({"hparams": {"k2": 150}}, {"val": {8000: 0.7257}}),
    ({"hparams": {"k1": 30, "k2": 60}}, {"val": {8000: 0.7382}}),
    ({"hparams": {"k1": 30, "k2": 100}}, {"val": {8000: 0.7671}}),
    ({"hparams": {"k2": 100, "quantization_weight": 1.0}}, {"val": {8000: 0.8263}}),
    ({"hparams": {"k2": 100, "quantization_weight": 3.0}}, {"val": {8000: 0.8486}}),
    ({"hparams": {"k2": 100, "quantization_weight": 5.0}}, {"val": {8000: 0.8503}}),
    ({"learning_rate": 3e-4, "hparams": {"k2": 100, "quantization_weight": 3.0}}, {"val": {8000: 0.8314}}),
    ({"hparams": {"k2": 150, "quantization_weight": 3.0}}, {"val": {8000: 0.8046}}),
    ({"hparams": {"k2": 30, "quantization_weight": 3.0}}, {"val": {8000: 0.8506}}),
    ({"hparams": {"k2": 60, "quantization_weight": 2.0}}, {"val": {8000: 0.8715}}),
    # 12000 steps, λ = 3: K2 = 60 vs 45 over seeds.
    ({"steps": 12000, "hparams": {"k2": 60, "quantization_weight": 3.0}},
     {"val_by_seed": {0: 0.8678, 1: 0.8714, 2: 0.8647}}),   # seed 2 at 8000 steps
    # The preset:
    ({"steps": 12000, "hparams": {"k2": 45, "quantization_weight": 3.0}},
     {"val_by_seed": {0: 0.8809, 1: 0.8725, 2: 0.8732}}),
]
