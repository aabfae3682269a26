#!/bin/sh
# The official redis image's entrypoint contract (docker-library/redis
# docker-entrypoint.sh), so the chart drives both images the same way: options or a
# *.conf file as the first argument run `redis-server` with them; anything else runs
# as given; a default umask of 0022 becomes 0077 (the AOF is private). This image
# runs as uid 999 already, so the upstream step-down from root has nothing to do.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$(umask)" = 0022 ]; then
  umask 0077
fi
exec "$@"
