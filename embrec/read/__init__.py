"""The read pipeline, one module per role (imports point down this list):

* :mod:`embrec.read.options` — the query options, validated once (:class:`QueryOptions`);
* :mod:`embrec.read.scope` — the registration, what the request may see (filters applied),
  and what is left out (:class:`Scope`, :class:`Exclusions`);
* :mod:`embrec.read.retrieval` — the pgvector SQL: nearest neighbours over the HNSW index;
* :mod:`embrec.read.rerank` — the popularity/recency blend and diversity (MMR);
* :mod:`embrec.read.results` — host objects in rank order (:class:`Result`) and explanations;
* :mod:`embrec.read.pipeline` — one function per query kind, running the stages above.

Popularity lives in :mod:`embrec.popularity`; the public functions in :mod:`embrec.queries`
(``embrec.similar`` …) and the REST endpoints in :mod:`embrec.api.views` both validate once and
call the pipeline. See docs/READ_PATH.md.
"""
