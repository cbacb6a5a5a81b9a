"""HARR and FDBH ablations on digits (validation split only, 32 bits, seed 0): each term off in turn.

Each row ran ``python experiments/nsh_digits_sweep.py '<json>' <label>`` (the harness prints the
validation mAP@all at every evaluation; the test split is never printed) with the method's
``digits`` preset and the one change shown. Measured 2026-12-02 on the 2-core CPU machine, one run
each, while nothing else ran. Differences under about 0.015 are within what a change of seed gives
on this split (DDH: 0.873-0.881 over three seeds, experiments/configs/ddh_digits.py).
"""

HARR = [  # 1000 steps; validation mAP@all at steps 500 and 1000
    ({"method": "harr"}, {500: 0.8747, 1000: 0.8809}),
    ({"method": "harr", "hparams": {"similarity_weight": 0.0}}, {500: 0.7304, 1000: 0.6753}),
    ({"method": "harr", "hparams": {"bc_weight": 0.0}}, {500: 0.7246, 1000: 0.7500}),
    ({"method": "harr", "hparams": {"quantization_weight": 0.0}}, {500: 0.8611, 1000: 0.8548}),
]

FDBH = [  # 3000 steps; validation mAP@all at steps 1000, 2000, 3000
    ({"method": "fdbh"}, {1000: 0.8477, 2000: 0.8815, 3000: 0.9020}),
    ({"method": "fdbh", "hparams": {"contrastive_weight": 0.0}}, {1000: 0.5711, 2000: 0.5492, 3000: 0.5499}),
    ({"method": "fdbh", "hparams": {"fdo_weight": 0.0}}, {1000: 0.8503, 2000: 0.8874, 3000: 0.9061}),
    ({"method": "fdbh", "hparams": {"rec_weight": 0.0}}, {1000: 0.8598, 2000: 0.9158, 3000: 0.9163}),
    # γ schedule off: γ fixed at gamma_max = 10, or at 1.
    ({"method": "fdbh", "hparams": {"anneal_gamma": False}}, {1000: 0.8353, 2000: 0.8897, 3000: 0.8976}),
    ({"method": "fdbh", "hparams": {"anneal_gamma": False, "gamma_max": 1.0}},
     {1000: 0.8700, 2000: 0.9035, 3000: 0.9058}),
]
