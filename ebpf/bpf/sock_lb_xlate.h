/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The translation of one address family: backend selection, session
 * affinity and the reverse map, written once for both families.
 * sock_lb.bpf.c includes this file twice, with FAMILY defined as 4 and then
 * as 6; each inclusion defines the functions and structs below with the
 * family's number appended (xlate_fwd4, xlate_fwd6, struct backend4, ...),
 * working on that family's maps (lb4_services or lb6_services, ...) and
 * address type (lb4_addr_t or lb6_addr_t, compared with addr4_eq or
 * addr6_eq, all defined by sock_lb.bpf.c before it includes this file).
 *
 * What each function does and why is the same in both families; the hooks
 * (in sock_lb.bpf.c) only read the destination out of the socket address and
 * write the backend back in.
 */

#ifndef FAMILY
#error "define FAMILY as 4 or 6 before including sock_lb_xlate.h"
#endif

#define XLATE_CAT_(a, b, c) a##b##c
#define XLATE_CAT(a, b, c) XLATE_CAT_(a, b, c)

/* This family's name of `name`: LB_FN(pick_backend) is pick_backend4 or pick_backend6. */
#define LB_FN(name) XLATE_CAT(name, FAMILY, )
#define LB_ADDR XLATE_CAT(lb, FAMILY, _addr_t)
#define LB_ADDR_EQ XLATE_CAT(addr, FAMILY, _eq)
#define LB_KEY XLATE_CAT(lb, FAMILY, _key)
#define LB_VALUE XLATE_CAT(lb, FAMILY, _value)
#define LB_REVERSE_KEY XLATE_CAT(lb, FAMILY, _reverse_key)
#define LB_REVERSE_VALUE XLATE_CAT(lb, FAMILY, _reverse_value)
#define LB_AFFINITY_KEY XLATE_CAT(lb, FAMILY, _affinity_key)
#define LB_AFFINITY_VALUE XLATE_CAT(lb, FAMILY, _affinity_value)
#define LB_SERVICES XLATE_CAT(lb, FAMILY, _services)
#define LB_REVERSE XLATE_CAT(lb, FAMILY, _reverse_sk)
#define LB_AFFINITY XLATE_CAT(lb, FAMILY, _affinity)

/* A backend address and port, in network byte order. */
struct LB_FN(backend) {
	LB_ADDR address;
	__be16 port;
};

/*
 * Pick a backend of the frontend in `key` (slot 0 on entry) from `hash`.
 * Returns its slot, or NULL when the frontend has no backend or the revision
 * read was retired meanwhile. On success `key` names the slot picked.
 */
static __always_inline struct LB_VALUE *LB_FN(pick_backend)(struct LB_KEY *key, __u32 hash)
{
	struct LB_VALUE *master;
	__u16 count;

	key->slot = LB_MASTER_SLOT;
	key->rev = 0;
	master = bpf_map_lookup_elem(&LB_SERVICES, key);
	if (!master)
		return NULL;

	/* Read once: the loader may flip the master at any time. */
	count = master->count;
	key->rev = master->rev;
	if (count == 0 || count > LB_MAX_BACKENDS)
		return NULL;

	key->slot = (__u16)(hash % count) + 1;
	return bpf_map_lookup_elem(&LB_SERVICES, key);
}

/* State of the bpf_loop search for a remembered backend among the slots. */
struct LB_FN(slot_search) {
	struct LB_KEY key; /* the frontend at the revision searched; slot set per step */
	struct LB_FN(backend) wanted;
	__u16 found;       /* its slot, 0 while not found */
};

/* One step of the search: slot index + 1 of the revision in search->key. */
static long LB_FN(find_slot_step)(__u32 index, void *ctx)
{
	struct LB_FN(slot_search) *search = ctx;
	struct LB_VALUE *slot;

	search->key.slot = (__u16)(index + 1);
	slot = bpf_map_lookup_elem(&LB_SERVICES, &search->key);
	if (slot && LB_ADDR_EQ(slot->address, search->wanted.address) && slot->port == search->wanted.port) {
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
static __always_inline __u16 LB_FN(slot_of)(const struct LB_KEY *frontend, __u16 rev, __u16 count,
					     const struct LB_AFFINITY_VALUE *known)
{
	struct LB_FN(slot_search) search = {
		.key = *frontend,
		.wanted = { .address = known->address, .port = known->port },
	};
	struct LB_VALUE *slot;

	search.key.rev = rev;
	if (known->rev == rev && known->slot >= 1 && known->slot <= count) {
		search.key.slot = known->slot;
		slot = bpf_map_lookup_elem(&LB_SERVICES, &search.key);
		if (slot && LB_ADDR_EQ(slot->address, known->address) && slot->port == known->port)
			return known->slot;
		return 0;
	}
	bpf_loop(count, LB_FN(find_slot_step), &search, 0);
	return search.found;
}

/*
 * sessionAffinity: ClientIP. The backend this client (network namespace)
 * was given for the frontend in `key` (slot 0 on entry) if it used it less
 * than `timeout` seconds ago and it is still a backend of the frontend,
 * otherwise a new pick from `hash`, remembered. Returns 0 with `out` set, or
 * -1 when the frontend has no backend (or its revision was retired while we
 * looked: the caller tries once more).
 */
static __always_inline int LB_FN(pick_with_affinity)(struct bpf_sock_addr *ctx, struct LB_KEY *key, __u32 hash,
						      struct LB_FN(backend) *out)
{
	struct LB_AFFINITY_KEY affinity_key = {
		.client = bpf_get_netns_cookie(ctx),
		.address = key->address,
		.dport = key->dport,
		.proto = key->proto,
	};
	struct LB_AFFINITY_VALUE entry = {};
	struct LB_AFFINITY_VALUE *known;
	struct LB_VALUE *master, *backend;
	__u64 now = bpf_ktime_get_boot_ns();
	__u64 timeout;
	__u16 count, rev, slot;

	key->slot = LB_MASTER_SLOT;
	key->rev = 0;
	master = bpf_map_lookup_elem(&LB_SERVICES, key);
	if (!master)
		return -1;
	/* Read once: the loader may flip the master at any time. */
	count = master->count;
	rev = master->rev;
	timeout = (__u64)master->affinity_timeout * NSEC_PER_SEC;
	if (count == 0 || count > LB_MAX_BACKENDS)
		return -1;

	known = bpf_map_lookup_elem(&LB_AFFINITY, &affinity_key);
	if (known && !expired(known->last_used, now, timeout)) {
		slot = LB_FN(slot_of)(key, rev, count, known);
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
	backend = bpf_map_lookup_elem(&LB_SERVICES, key);
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
	bpf_map_update_elem(&LB_AFFINITY, &affinity_key, &entry, BPF_ANY);
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
static __always_inline int LB_FN(choose_backend)(struct bpf_sock_addr *ctx, struct LB_KEY *key, __u16 flags,
						  __u32 hash, struct LB_FN(backend) *out)
{
	struct LB_VALUE *backend;

	if (flags & LB_FLAG_AFFINITY)
		return LB_FN(pick_with_affinity)(ctx, key, hash, out);
	backend = LB_FN(pick_backend)(key, hash);
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
static __always_inline long LB_FN(remember_frontend)(__u64 cookie, const struct LB_KEY *frontend,
						      const struct LB_FN(backend) *backend)
{
	struct LB_REVERSE_KEY key = {
		.cookie = cookie,
		.address = backend->address,
		.port = backend->port,
	};
	struct LB_REVERSE_VALUE value = {
		.address = frontend->address,
		.port = frontend->dport,
	};
	struct LB_REVERSE_VALUE *known;

	known = bpf_map_lookup_elem(&LB_REVERSE, &key);
	if (known && LB_ADDR_EQ(known->address, value.address) && known->port == value.port)
		return 0;
	return bpf_map_update_elem(&LB_REVERSE, &key, &value, BPF_ANY);
}

/*
 * The forward translation of connect and sendmsg: `frontend` (address, port
 * and protocol of the destination; slot 0, rev 0) becomes one of its
 * backends. Returns XLATE_PASS when it is no Service frontend (the socket is
 * left alone), XLATE_DONE with `out` set to the backend, or the negative
 * errno the syscall must fail with.
 */
static __always_inline int LB_FN(xlate_fwd)(struct bpf_sock_addr *ctx, const struct LB_KEY *frontend,
					     struct LB_FN(backend) *out)
{
	struct LB_KEY key = *frontend;
	struct LB_VALUE *master;
	__u64 cookie;
	__u32 hash;
	__u16 flags;

	master = bpf_map_lookup_elem(&LB_SERVICES, &key);
	if (!master)
		return XLATE_PASS;
	flags = master->flags;

	cookie = bpf_get_socket_cookie(ctx);
	/*
	 * TCP (and SCTP) pick at random once per connection. UDP picks from the
	 * socket cookie: sendmsg runs for every datagram of an unconnected
	 * socket, and all of them must reach the same backend, as kube-proxy's
	 * conntrack entry keeps a UDP flow on one backend; a connected UDP
	 * socket then behaves the same. With session affinity the pick is only
	 * the first of a client, remembered for the next ones.
	 */
	hash = key.proto == IPPROTO_UDP ? cookie_hash(cookie) : bpf_get_prandom_u32();
	if (LB_FN(choose_backend)(ctx, &key, flags, hash, out) < 0) {
		/*
		 * A miss after a hit on the master means the loader retired the
		 * revision between our lookups (or the service has no backend):
		 * look once more, which then sees the new revision.
		 */
		key = *frontend;
		if (LB_FN(choose_backend)(ctx, &key, flags, hash, out) < 0)
			return -ECONNREFUSED;
	}

	/*
	 * Without its reverse entry a UDP reply would seem to come from the
	 * backend, and resolvers (glibc, musl) drop replies from an address they
	 * did not ask: fail the send now rather than lose the answer. TCP only
	 * loses the frontend in getpeername(), so its connection goes ahead.
	 */
	if (LB_FN(remember_frontend)(cookie, frontend, out) < 0 && key.proto == IPPROTO_UDP)
		return -ENOMEM;
	return XLATE_DONE;
}

/*
 * The reverse translation of recvmsg and getpeername: when `*address` and
 * `*port` are a backend this socket was sent to by the forward translation,
 * they become the frontend it dialled, as long as that frontend still exists,
 * and 1 is returned; otherwise 0, and they are left alone.
 */
static __always_inline int LB_FN(xlate_rev)(struct bpf_sock_addr *ctx, LB_ADDR *address, __be16 *port)
{
	struct LB_REVERSE_KEY key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.address = *address,
		.port = *port,
	};
	struct LB_REVERSE_VALUE *frontend;
	struct LB_KEY service = {
		.proto = (__u8)ctx->protocol,
		.slot = LB_MASTER_SLOT,
	};

	frontend = bpf_map_lookup_elem(&LB_REVERSE, &key);
	if (!frontend)
		return 0;

	/*
	 * The Service was removed: its old backend now answers as itself, as
	 * it would have had the socket dialled it directly. The entry is
	 * useless from now on, so it goes (a re-created Service gets new
	 * entries on the next forward translation).
	 */
	service.address = frontend->address;
	service.dport = frontend->port;
	if (!bpf_map_lookup_elem(&LB_SERVICES, &service)) {
		bpf_map_delete_elem(&LB_REVERSE, &key);
		return 0;
	}

	*address = service.address;
	*port = service.dport;
	return 1;
}

#undef LB_FN
#undef LB_ADDR
#undef LB_ADDR_EQ
#undef LB_KEY
#undef LB_VALUE
#undef LB_REVERSE_KEY
#undef LB_REVERSE_VALUE
#undef LB_AFFINITY_KEY
#undef LB_AFFINITY_VALUE
#undef LB_SERVICES
#undef LB_REVERSE
#undef LB_AFFINITY
#undef XLATE_CAT
#undef XLATE_CAT_
