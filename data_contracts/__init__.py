"""Data contracts for bertflow: a strict TSV reader, GX suites as code, validators that report.

Modules: `reader` (read_tsv), `suites` (SUITES, get_suite), `shard_stats` (per-row facts about
tokenized shards), `validate` (validate_mrpc_split, validate_shard_frame, ValidationReport) and
`errors` (ContractViolation). Nothing here imports Great Expectations until a suite is built.
"""
