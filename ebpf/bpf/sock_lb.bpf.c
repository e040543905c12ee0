// SPDX-License-Identifier: GPL-2.0-only
/*
 * Socket-level service load-balancing for IPv4, in four cgroup hooks:
 *
 *   connect4     connect() of a TCP, UDP or SCTP socket to a Service frontend
 *                (ClusterIP:port) goes to one of its backends instead;
 *   sendmsg4     so does each sendto()/sendmsg() of an unconnected UDP socket;
 *   recvmsg4     recvfrom()/recvmsg() of such a socket reports the frontend as
 *                the source of the backend's replies;
 *   getpeername4 getpeername() of a connected socket reports the frontend.
 *
 * The forward hooks run once per connection (or datagram of an unconnected
 * socket), so there is no per-packet NAT and no conntrack; they record what
 * they rewrote in lb4_reverse_sk for the reverse hooks. See lb.h for the map
 * layouts, why a service can never be seen torn, and why the reverse map is
 * keyed by socket cookie.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lb.h"

#define ENOMEM 12
#define ECONNREFUSED 111

/*
 * Verdicts of the cgroup/sock_addr hooks: 1 lets the syscall go on, 0 fails
 * it. recvmsg4 and getpeername4 must always return 1 (the verifier enforces
 * it): they can only rewrite the address the application is given.
 */
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_reverse_key);
	__type(value, struct lb4_reverse_value);
	/* Overridden by the loader from MapSizes. */
	__uint(max_entries, 65536);
#ifdef NODELET_PIN_BY_NAME
	/*
	 * Pinned too: after a restart the programs swapped in keep answering
	 * for the sockets the previous ones translated.
	 */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
#endif
} lb4_reverse_sk SEC(".maps");

/*
 * A well-mixed 32 bits of a socket cookie (splitmix64's finalizer). Cookies
 * are handed out in sequence, so taken as they are, sockets an application
 * opens in a fixed pattern (one to this Service, one to another, ...) would
 * all land on the same backend.
 */
static __always_inline __u32 cookie_hash(__u64 cookie)
{
	cookie ^= cookie >> 30;
	cookie *= 0xbf58476d1ce4e5b9ULL;
	cookie ^= cookie >> 27;
	cookie *= 0x94d049bb133111ebULL;
	cookie ^= cookie >> 31;
	return (__u32)cookie;
}

/*
 * Pick a backend of the frontend in `key` (slot 0 on entry) from `hash`.
 * Returns its slot, or NULL when the frontend has no backend or the revision
 * read was retired meanwhile.
 */
static __always_inline struct lb4_value *pick_backend(struct lb4_key *key, __u32 hash)
{
	struct lb4_value *master;
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

	key->slot = (__u16)(hash % count) + 1;
	return bpf_map_lookup_elem(&lb4_services, key);
}

/*
 * Remember that this socket's traffic to `backend` was meant for the frontend
 * in `frontend`. Written only when it differs from what is there: a UDP
 * socket sending many datagrams finds its entry in place (the lookup also
 * refreshes it in the LRU), so the hot path does no map write.
 */
static __always_inline long remember_frontend(__u64 cookie, const struct lb4_key *frontend, __be32 backend_address,
					      __be16 backend_port)
{
	struct lb4_reverse_key key = {
		.cookie = cookie,
		.address = backend_address,
		.port = backend_port,
	};
	struct lb4_reverse_value value = {
		.address = frontend->address,
		.port = frontend->dport,
	};
	struct lb4_reverse_value *known;

	known = bpf_map_lookup_elem(&lb4_reverse_sk, &key);
	if (known && known->address == value.address && known->port == value.port)
		return 0;
	return bpf_map_update_elem(&lb4_reverse_sk, &key, &value, BPF_ANY);
}

/*
 * The forward translation of connect4 and sendmsg4: a destination that is a
 * Service frontend becomes one of its backends.
 */
static __always_inline int forward(struct bpf_sock_addr *ctx)
{
	struct lb4_key key = {
		.address = ctx->user_ip4,
		/* user_port holds the port in network order in its low 16 bits. */
		.dport = (__be16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
		.slot = LB_MASTER_SLOT,
	};
	struct lb4_value *backend;
	__be32 backend_address;
	__be16 backend_port;
	__u64 cookie;
	__u32 hash;

	if (!bpf_map_lookup_elem(&lb4_services, &key))
		return SYSCALL_ALLOW; /* not a service: leave the socket alone */

	cookie = bpf_get_socket_cookie(ctx);
	/*
	 * TCP (and SCTP) pick at random once per connection. UDP picks from the
	 * socket cookie: sendmsg4 runs for every datagram of an unconnected
	 * socket, and all of them must reach the same backend, as kube-proxy's
	 * conntrack entry keeps a UDP flow on one backend; a connected UDP
	 * socket then behaves the same.
	 */
	hash = key.proto == IPPROTO_UDP ? cookie_hash(cookie) : bpf_get_prandom_u32();
	backend = pick_backend(&key, hash);
	/*
	 * A miss after a hit on the master means the loader retired the
	 * revision between our lookups (or the service has no backend): look
	 * once more, which then sees the new revision.
	 */
	if (!backend)
		backend = pick_backend(&key, hash);
	if (!backend) {
		bpf_set_retval(-ECONNREFUSED);
		return SYSCALL_REJECT;
	}
	backend_address = backend->address;
	backend_port = backend->port;

	/*
	 * Without its reverse entry a UDP reply would seem to come from the
	 * backend, and resolvers (glibc, musl) drop replies from an address they
	 * did not ask: fail the send now rather than lose the answer. TCP only
	 * loses the frontend in getpeername(), so its connection goes ahead.
	 */
	if (remember_frontend(cookie, &key, backend_address, backend_port) < 0 && key.proto == IPPROTO_UDP) {
		bpf_set_retval(-ENOMEM);
		return SYSCALL_REJECT;
	}

	ctx->user_ip4 = backend_address;
	ctx->user_port = (__u32)backend_port;
	return SYSCALL_ALLOW;
}

/*
 * The reverse translation of recvmsg4 and getpeername4: an address that is a
 * backend this socket was sent to by the forward hooks becomes the frontend
 * it dialled, as long as that frontend still exists.
 */
static __always_inline void reverse(struct bpf_sock_addr *ctx)
{
	struct lb4_reverse_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct lb4_reverse_value *frontend;
	struct lb4_key service = {
		.proto = (__u8)ctx->protocol,
		.slot = LB_MASTER_SLOT,
	};

	frontend = bpf_map_lookup_elem(&lb4_reverse_sk, &key);
	if (!frontend)
		return;

	/*
	 * The Service was removed: its old backend now answers as itself, as
	 * it would have had the socket dialled it directly. The entry is
	 * useless from now on, so it goes (a re-created Service gets new
	 * entries on the next forward translation).
	 */
	service.address = frontend->address;
	service.dport = frontend->port;
	if (!bpf_map_lookup_elem(&lb4_services, &service)) {
		bpf_map_delete_elem(&lb4_reverse_sk, &key);
		return;
	}

	ctx->user_ip4 = service.address;
	ctx->user_port = (__u32)service.dport;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	return forward(ctx);
}

/* Runs only for sends that name a destination (unconnected UDP sockets). */
SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return forward(ctx);
}

/* Runs only for UDP receives that ask for the source address. */
SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	reverse(ctx);
	return SYSCALL_ALLOW;
}

/* 14 characters: the kernel keeps 15 of a program's name. */
SEC("cgroup/getpeername4")
int sock4_peername(struct bpf_sock_addr *ctx)
{
	reverse(ctx);
	return SYSCALL_ALLOW;
}

char LICENSE[] SEC("license") = "GPL";
