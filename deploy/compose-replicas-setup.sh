#!/bin/sh
# One-shot set-up for compose-replicas.yaml: an authority, and one member node whose
# database is the compose PostgreSQL, run as replicas. Runs once; later runs change
# nothing.
set -eu
space=/space
if [ -f "$space/replica/node/node.toml" ]; then
  echo "already set up"
  exit 0
fi
liutong authority init --dir "$space/authority" --name "Compose Replica Space" \
  --allow-dns replica-a,replica-b,transport
liutong join --dir "$space/replica/node" --participant 11330100MA2TRA0011 \
  --dns replica-a --dns replica-b --dns transport
liutong authority admit --dir "$space/authority" --participant 11330100MA2TRA0011 \
  --request "$space/replica/node/identity/admission-request.json" --out /tmp/bundle \
  --name "Hangzhou Transport Bureau" --kind government --sector transport \
  --region 330100 --roles provider,consumer
liutong init --dir "$space/replica/node" --bundle /tmp/bundle \
  --listen 0.0.0.0:7700 --admin-listen 127.0.0.1:7701 --authority authority:7800
cat >>"$space/replica/node/node.toml" <<'TOML'

[storage]
engine = "postgres"
url = "postgresql://liutong@postgres:5432/liutong"
password_env = "LIUTONG_DB_PASSWORD"
replicas = true
TOML
rm -rf /tmp/bundle
chown -R 10001:10001 "$space/authority" "$space/replica"
echo "set up: authority and one node run as two replicas"
