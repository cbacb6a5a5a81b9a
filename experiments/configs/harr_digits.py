"""HARR on digits: the sweep behind the ``digits`` preset (validation split only, 32 bits).

Each row ran ``python experiments/nsh_digits_sweep.py '<json overrides>'`` (trains on the training
split, prints validation mAP@all at every evaluation; the queries are never seen). Common to every row
unless it says otherwise: ``method=harr``, the MLP from scratch, CIBHash's digits views, batch 128,
Adam 1e-3, M = 512 WTA codes of window 4, seed 0. Measured 2026-12-02 on the 2-core CPU machine while
other jobs shared it (wall times are not comparable between rows).
"""

SWEEP = [
    # The spec's constants (p 0.1, α 0.01, β 0.1), WTA on raw pixels, 3000 steps.
    ({}, {"val": {1000: 0.7262, 2000: 0.7377, 3000: 0.7459}}),
    ({"hparams": {"top_fraction": 0.05}}, {"val": {3000: 0.735}}),
    ({"hparams": {"top_fraction": 0.2}}, {"val": {3000: 0.7368}}),
    ({"hparams": {"bc_weight": 0.0}}, {"val": {3000: 0.6634}}),
    ({"hparams": {"quantization_weight": 0.0}}, {"val": {3000: 0.7477}}),
    # WTA codes of PCA-whitened pixels: better early, drifting down with more steps.
    ({"model": {"wta_features": "whitened_pixels"}}, {"val": {1000: 0.8016, 2000: 0.7945, 3000: 0.7665}}),
    ({"model": {"wta_features": "whitened_pixels"}, "hparams": {"top_fraction": 0.05}},
     {"val": {1000: 0.8192, 2000: 0.8214, 3000: 0.7972}}),
    ({"model": {"wta_features": "whitened_pixels"}, "hparams": {"wta_window": 8}},
     {"val": {1000: 0.8117, 3000: 0.7727}}),
    # Whitened pixels, p 0.05, and a cosine decay / lower rate / the other weights.
    ({"hparams": {"top_fraction": 0.05}, "lr_schedule": "cosine", "steps": 2000}, {"val": {2000: 0.818}}),
    ({"hparams": {"top_fraction": 0.05}, "learning_rate": 3e-4, "steps": 3000}, {"val": {3000: 0.8304}}),
    ({"hparams": {"top_fraction": 0.02}, "lr_schedule": "cosine", "steps": 2000}, {"val": {2000: 0.8281}}),
    ({"hparams": {"top_fraction": 0.05, "bc_weight": 0.03}, "lr_schedule": "cosine", "steps": 2000},
     {"val": {500: 0.8484, 2000: 0.8423}}),
    ({"hparams": {"top_fraction": 0.05, "bc_weight": 0.1}, "lr_schedule": "cosine", "steps": 2000},
     {"val": {500: 0.8694, 2000: 0.8524}}),
    ({"hparams": {"top_fraction": 0.05, "bc_weight": 0.3}, "lr_schedule": "cosine", "steps": 2000},
     {"val": {500: 0.86, 2000: 0.8345}}),
    ({"hparams": {"top_fraction": 0.05, "bc_weight": 0.1}, "lr_schedule": "cosine", "steps": 1000},
     {"val_by_seed": {0: 0.865, 1: 0.8452, 2: 0.8526}}),
    ({"batch_size": 256, "hparams": {"top_fraction": 0.05, "bc_weight": 0.1}, "lr_schedule": "cosine",
      "steps": 1000}, {"val": {1000: 0.8504}}),
    # The preset:
    ({"hparams": {"top_fraction": 0.05, "bc_weight": 0.1, "quantization_weight": 0.3},
      "lr_schedule": "cosine", "steps": 1000}, {"val": {500: 0.8747, 1000: 0.8809}}),
]
