"""The extract stage: the decoded ``.npy`` shards (:mod:`.decoded`), the packed tar shards (:mod:`.packed`), their shared
resumable shard writing (:mod:`.shards`) and the text vocabulary (:mod:`.text`). Import-free.
"""
