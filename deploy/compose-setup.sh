#!/bin/sh
# One-shot set-up for compose.yaml: an authority, and three members whose nodes make their
# own keys and admission requests, are admitted from those requests, and install the
# bundles they get back. Runs once; later runs change nothing.
set -eu
space=/space
if [ -f "$space/authority/authority.json" ]; then
  echo "already set up"
  exit 0
fi
# Each node is reached by its compose service name.
liutong authority init --dir "$space/authority" --name "Compose Data Space" \
  --allow-dns transport,ecology,logistics
admit() { # name participant args...
  name=$1; participant=$2; shift 2
  liutong join --dir "$space/$name/node" --participant "$participant" --dns "$name"
  liutong authority admit --dir "$space/authority" --participant "$participant" \
    --request "$space/$name/node/identity/admission-request.json" --out "/tmp/bundle-$name" "$@"
  liutong init --dir "$space/$name/node" --bundle "/tmp/bundle-$name" \
    --listen 0.0.0.0:7700 --admin-listen 127.0.0.1:7701 --authority authority:7800 \
    --important-regions 330000
}
admit transport 11330100MA2TRA0011 --name "Hangzhou Transport Bureau" \
  --kind government --sector transport --region 330100 --roles provider,consumer
admit ecology 11330000MA2ECE0015 --name "Hangzhou Ecology Bureau" \
  --kind government --sector ecology --region 330100 --roles provider,consumer,auditor
admit logistics 91330100MA2L0G0013 --name "Hangzhou Logistics Co." \
  --kind enterprise --sector logistics --region 330106 --roles consumer
# The transport bureau's audit log is witnessed by the ecology bureau.
sed -i 's|^witnesses = \[\]|witnesses = ["ecology:7700"]|; s|^quorum = 0|quorum = 1|' \
  "$space/transport/node/node.toml"
rm -rf /tmp/bundle-*
chown -R 10001:10001 "$space/authority" "$space/transport" "$space/ecology" "$space/logistics"
echo "set up: authority and three nodes"
