"""Training-time loading: the pre-training stream (:mod:`.pretrain`) mixing corpora by weight (:mod:`.mixing`) from
packed (:mod:`.packed`) and decoded (:mod:`.decoded`) sources, with VATT's augmentation (:mod:`.augment`). Import-free.
"""
