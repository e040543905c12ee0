// SPDX-License-Identifier: GPL-2.0-only
/*
 * Socket-level service load-balancing: on connect() of an IPv4 TCP or UDP
 * socket, rewrite a Service frontend (ClusterIP:port) to one backend chosen at
 * random. Runs once per connection, so there is no per-packet NAT and no
 * conntrack. See lb.h for the map layout and why it cannot be seen torn.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lb.h"

#define ECONNREFUSED 111

/* Verdicts of cgroup/connect4: 1 lets the syscall go on, 0 fails it. */
#define SYSCALL_ALLOW 1
#define SYSCALL_REJECT 0

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_value);
	/* Overridden by the loader from MapSizes. */
	__uint(max_entries, 65536);
#ifdef NODELET_PIN_BY_NAME
	/*
	 * The pinned build (sock_lb_pinned.bpf.o): the loader opens
	 * <pin dir>/lb4_services if it exists, so a restarted agent programs the
	 * map the attached program reads. A separate object because aya pins
	 * such maps under /sys/fs/bpf when no pin directory is given.
	 */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
#endif
} lb4_services SEC(".maps");

/*
 * Pick a backend of the frontend in `key` (slot 0 on entry). Returns its slot, or NULL when
 * the frontend has no backend or the revision read was retired meanwhile.
 */
static __always_inline struct lb4_value *pick_backend(struct lb4_key *key)
{
	struct lb4_value *master;
	struct lb4_value *slot;
	__u16 count;

	key->slot = LB_MASTER_SLOT;
	key->rev = 0;
	master = bpf_map_lookup_elem(&lb4_services, key);
	if (!master)
		return NULL;

	/* Read once: the loader may flip the master at any time. */
	count = master->count;
	key->rev = master->rev;
	if (count == 0 || count > LB_MAX_BACKENDS)
		return NULL;

	key->slot = (__u16)(bpf_get_prandom_u32() % count) + 1;
	slot = bpf_map_lookup_elem(&lb4_services, key);
	return slot;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	struct lb4_key key = {
		.address = ctx->user_ip4,
		/* user_port holds the port in network order in its low 16 bits. */
		.dport = (__be16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	struct lb4_value *backend;

	key.slot = LB_MASTER_SLOT;
	if (!bpf_map_lookup_elem(&lb4_services, &key))
		return SYSCALL_ALLOW; /* not a service: leave the socket alone */

	backend = pick_backend(&key);
	/*
	 * A miss after a hit on the master means the loader retired the
	 * revision between our lookups (or the service has no backend): look
	 * once more, which then sees the new revision.
	 */
	if (!backend)
		backend = pick_backend(&key);
	if (!backend) {
		bpf_set_retval(-ECONNREFUSED);
		return SYSCALL_REJECT;
	}

	ctx->user_ip4 = backend->address;
	ctx->user_port = (__u32)backend->port;
	return SYSCALL_ALLOW;
}

char LICENSE[] SEC("license") = "GPL";
