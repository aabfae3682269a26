"""The task API: what an application imports to define, send and await tasks
(`@task`, chain / group / chord, Client, AsyncResult), re-exported by `worker`."""
