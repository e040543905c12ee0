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
 * they rewrote in lb4_reverse_sk for the reverse hooks, and, for Services
 * with session affinity, which backend each client was given in
 * lb4_affinity. See lb.h for the map layouts, why a service can never be seen
 * torn, why the reverse map is keyed by socket cookie and the affinity map by
 * network namespace.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "lb.h"

#define ENOMEM 12
#define ECONNREFUSED 111

#define NSEC_PER_SEC 1000000000ULL

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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity_value);
	/* Overridden by the loader from MapSizes. */
	__uint(max_entries, 65536);
#ifdef NODELET_PIN_BY_NAME
	/* Pinned too: clients keep their backends across a restart. */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
#endif
} lb4_affinity SEC(".maps");

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
 * read was retired meanwhile. On success `key` names the slot picked.
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

/* A backend address and port, in network byte order. */
struct backend {
	__be32 address;
	__be16 port;
};

/* State of the bpf_loop search for a remembered backend among the slots. */
struct slot_search {
	struct lb4_key key; /* the frontend at the revision searched; slot set per step */
	struct backend wanted;
	__u16 found;        /* its slot, 0 while not found */
};

/* One step of the search: slot index + 1 of the revision in search->key. */
static long find_slot_step(__u32 index, void *ctx)
{
	struct slot_search *search = ctx;
	struct lb4_value *slot;

	search->key.slot = (__u16)(index + 1);
	slot = bpf_map_lookup_elem(&lb4_services, &search->key);
	if (slot && slot->address == search->wanted.address && slot->port == search->wanted.port) {
		search->found = search->key.slot;
		return 1; /* stop */
	}
	return 0;
}

/*
 * The slot that holds `known`'s backend in revision `rev` of the frontend
 * (`count` slots), or 0 when it is no longer a backend there. While the
 * revision is the one remembered, one lookup confirms it; after a replace
 * the new revision is searched (at most LB_MAX_BACKENDS lookups, once per
 * client and replace: the caller then remembers the new slot).
 */
static __always_inline __u16 slot_of(const struct lb4_key *frontend, __u16 rev, __u16 count,
				     const struct lb4_affinity_value *known)
{
	struct slot_search search = {
		.key = *frontend,
		.wanted = { .address = known->address, .port = known->port },
	};
	struct lb4_value *slot;

	search.key.rev = rev;
	if (known->rev == rev && known->slot >= 1 && known->slot <= count) {
		search.key.slot = known->slot;
		slot = bpf_map_lookup_elem(&lb4_services, &search.key);
		if (slot && slot->address == known->address && slot->port == known->port)
			return known->slot;
		return 0;
	}
	bpf_loop(count, find_slot_step, &search, 0);
	return search.found;
}

/*
 * Whether an affinity entry last used at `last_used` is more than `timeout`
 * ns old at `now`. A last_used a little after `now` (another CPU refreshed
 * the entry meanwhile) is fresh, not an old time wrapped around.
 */
static __always_inline int expired(__u64 last_used, __u64 now, __u64 timeout)
{
	return last_used < now && now - last_used > timeout;
}

/*
 * sessionAffinity: ClientIP. The backend this client (network namespace)
 * was given for the frontend in `key` (slot 0 on entry) if it used it less
 * than `timeout` seconds ago and it is still a backend of the frontend,
 * otherwise a new pick from `hash`, remembered. Returns 0 with `out` set, or
 * -1 when the frontend has no backend (or its revision was retired while we
 * looked: the caller tries once more).
 */
static __always_inline int pick_with_affinity(struct bpf_sock_addr *ctx, struct lb4_key *key, __u32 hash,
					      struct backend *out)
{
	struct lb4_affinity_key affinity_key = {
		.client = bpf_get_netns_cookie(ctx),
		.address = key->address,
		.dport = key->dport,
		.proto = key->proto,
	};
	struct lb4_affinity_value entry = {};
	struct lb4_affinity_value *known;
	struct lb4_value *master, *backend;
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 timeout;
	__u16 count, rev, slot;

	key->slot = LB_MASTER_SLOT;
	key->rev = 0;
	master = bpf_map_lookup_elem(&lb4_services, key);
	if (!master)
		return -1;
	/* Read once: the loader may flip the master at any time. */
	count = master->count;
	rev = master->rev;
	timeout = (__u64)master->affinity_timeout * NSEC_PER_SEC;
	if (count == 0 || count > LB_MAX_BACKENDS)
		return -1;

	known = bpf_map_lookup_elem(&lb4_affinity, &affinity_key);
	if (known && !expired(known->last_used, now, timeout)) {
		slot = slot_of(key, rev, count, known);
		if (slot && slot == known->slot && rev == known->rev) {
			/*
			 * The common case: only the time changes. A plain store
			 * (one aligned 64-bit word) instead of a map update keeps
			 * it cheap for UDP, whose every datagram comes here.
			 */
			known->last_used = now;
			out->address = known->address;
			out->port = known->port;
			return 0;
		}
		if (slot) {
			/* Still a backend, at another place in a new revision. */
			entry.address = known->address;
			entry.port = known->port;
			goto remember;
		}
	}

	key->rev = rev;
	key->slot = (__u16)(hash % count) + 1;
	backend = bpf_map_lookup_elem(&lb4_services, key);
	if (!backend)
		return -1;
	slot = key->slot;
	entry.address = backend->address;
	entry.port = backend->port;

remember:
	entry.last_used = now;
	entry.rev = rev;
	entry.slot = slot;
	/*
	 * Best effort: without the entry the next connection picks afresh,
	 * which load-balances correctly, only without stickiness.
	 */
	bpf_map_update_elem(&lb4_affinity, &affinity_key, &entry, BPF_ANY);
	out->address = entry.address;
	out->port = entry.port;
	return 0;
}

/*
 * Choose the backend of the frontend in `key` (slot 0 on entry): remembered
 * per client when the master asks for session affinity, else from `hash`.
 * Returns 0 with `out` set, or -1 when the frontend has no backend or the
 * revision read was retired meanwhile.
 */
static __always_inline int choose_backend(struct bpf_sock_addr *ctx, struct lb4_key *key, __u16 flags, __u32 hash,
					  struct backend *out)
{
	struct lb4_value *backend;

	if (flags & LB_FLAG_AFFINITY)
		return pick_with_affinity(ctx, key, hash, out);
	backend = pick_backend(key, hash);
	if (!backend)
		return -1;
	out->address = backend->address;
	out->port = backend->port;
	return 0;
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
	struct lb4_key frontend = key;
	struct lb4_value *master;
	struct backend backend;
	__u64 cookie;
	__u32 hash;
	__u16 flags;

	master = bpf_map_lookup_elem(&lb4_services, &key);
	if (!master)
		return SYSCALL_ALLOW; /* not a service: leave the socket alone */
	flags = master->flags;

	cookie = bpf_get_socket_cookie(ctx);
	/*
	 * TCP (and SCTP) pick at random once per connection. UDP picks from the
	 * socket cookie: sendmsg4 runs for every datagram of an unconnected
	 * socket, and all of them must reach the same backend, as kube-proxy's
	 * conntrack entry keeps a UDP flow on one backend; a connected UDP
	 * socket then behaves the same. With session affinity the pick is only
	 * the first of a client, remembered for the next ones.
	 */
	hash = key.proto == IPPROTO_UDP ? cookie_hash(cookie) : bpf_get_prandom_u32();
	if (choose_backend(ctx, &key, flags, hash, &backend) < 0) {
		/*
		 * A miss after a hit on the master means the loader retired the
		 * revision between our lookups (or the service has no backend):
		 * look once more, which then sees the new revision.
		 */
		key = frontend;
		if (choose_backend(ctx, &key, flags, hash, &backend) < 0) {
			bpf_set_retval(-ECONNREFUSED);
			return SYSCALL_REJECT;
		}
	}

	/*
	 * Without its reverse entry a UDP reply would seem to come from the
	 * backend, and resolvers (glibc, musl) drop replies from an address they
	 * did not ask: fail the send now rather than lose the answer. TCP only
	 * loses the frontend in getpeername(), so its connection goes ahead.
	 */
	if (remember_frontend(cookie, &frontend, backend.address, backend.port) < 0 && key.proto == IPPROTO_UDP) {
		bpf_set_retval(-ENOMEM);
		return SYSCALL_REJECT;
	}

	ctx->user_ip4 = backend.address;
	ctx->user_port = (__u32)backend.port;
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
