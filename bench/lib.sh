# Shared by the benchmarks (sourced): the two-namespace veth setup.
# Uses NS_SRV, NS_CLI, IF_SRV, IF_CLI, ADDR_SRV, ADDR_CLI and PREFIX from the caller.

# setup_veth_pair: fresh namespaces joined by one veth pair, with static neighbours
# so no ARP happens during a run.
setup_veth_pair() {
    for ns in "$NS_SRV" "$NS_CLI"; do
        ip netns del "$ns" 2>/dev/null
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "$IF_SRV" netns "$NS_SRV" type veth peer name "$IF_CLI" netns "$NS_CLI"
    ip -n "$NS_SRV" addr add "$ADDR_SRV/$PREFIX" dev "$IF_SRV"
    ip -n "$NS_CLI" addr add "$ADDR_CLI/$PREFIX" dev "$IF_CLI"
    ip -n "$NS_SRV" link set "$IF_SRV" up
    ip -n "$NS_CLI" link set "$IF_CLI" up
    local mac_s mac_c
    mac_s=$(ip -n "$NS_SRV" -br link show "$IF_SRV" | awk '{print $3}')
    mac_c=$(ip -n "$NS_CLI" -br link show "$IF_CLI" | awk '{print $3}')
    ip -n "$NS_SRV" neigh replace "$ADDR_CLI" lladdr "$mac_c" dev "$IF_SRV" nud permanent
    ip -n "$NS_CLI" neigh replace "$ADDR_SRV" lladdr "$mac_s" dev "$IF_CLI" nud permanent
}

# write_kea_config FILE IFACE SOCKET_TYPE SUBNET POOL LEASES [ROUTER]: kea-dhcp4 with
# memfile leases persisted to LEASES (no cleanup process), warnings to stderr.
# SOCKET_TYPE: udp for relayed clients, raw for on-link ones without an address.
write_kea_config() {
    local router=""
    [[ -n ${7:-} ]] && router=", \"option-data\": [ { \"name\": \"routers\", \"data\": \"$7\" } ]"
    cat >"$1" <<KEA
{
  "Dhcp4": {
    "interfaces-config": { "interfaces": [ "$2" ], "dhcp-socket-type": "$3" },
    "lease-database": { "type": "memfile", "persist": true, "name": "$6", "lfc-interval": 0 },
    "valid-lifetime": 3600,
    "subnet4": [ { "id": 1, "subnet": "$4", "pools": [ { "pool": "$5" } ]$router } ],
    "loggers": [ { "name": "kea-dhcp4", "severity": "WARN",
                   "output_options": [ { "output": "stderr" } ] } ]
  }
}
KEA
}

# fresh_hub_state DIR: the hub's state without its store (leases, registry). The CA
# and the Talos cluster secrets stay from one start to the next, as on a real hub:
# generating them (an RSA-4096 key among them) costs seconds of CPU at a first
# start, which would land in the middle of a measurement.
fresh_hub_state() {
    rm -f "$1/hub.redb"
}

# wait_hub_settled DIR: after a start, until the cluster secrets exist (at most 30 s).
wait_hub_settled() {
    for _ in $(seq 300); do
        [[ -s $1/talos/secrets.yaml ]] && return 0
        sleep 0.1
    done
    return 0
}
