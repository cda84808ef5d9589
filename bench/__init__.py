"""ctrlrec-bench: suites, cached stages, Ray orchestration, reports and the `bench` CLI."""
