"""GPT-2, built from the chapter's ``GPT_CONFIG_124M``: the configuration (:mod:`.config`),
the Flax NNX model (:mod:`.model`, with :mod:`.attention` and :mod:`.matmul`), training data
(:mod:`.data`), training (:mod:`.train`), checkpoints (:mod:`.checkpoint`), generation
(:mod:`.generate`), Hugging Face loading (:mod:`.hf`) and sharding (:mod:`.sharding`)."""
