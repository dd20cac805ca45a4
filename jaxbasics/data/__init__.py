"""The data pipeline, from a corpus on disk to the token windows a model trains and is judged on:
documents (:mod:`.sources`), tokenizers (:mod:`.vocab`), token shards (:mod:`.shards`), the
``prepare`` step that writes them (:mod:`.prepare`) and memory-mapped batches (:mod:`.batches`).

This room sits below :mod:`jaxbasics.gpt`: it imports only the shared basics and NumPy (JAX is
never imported here), so a data loader costs nothing at start-up and ``gpt``, ``compare``,
``bench`` and ``cli`` may all read it.
"""
