"""Task and probe code baked into the e2e test image (FROM qscale).

`qscale_e2e.tasks` registers `e2e.record`, which logs every start and finish of a
run to the results Redis so the tests can count executions per task id;
`python -m qscale_e2e` is the probe the tests run inside the cluster.
"""
