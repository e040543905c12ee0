// SPDX-License-Identifier: GPL-2.0-only
/*
 * Socket-level service load-balancing for IPv4 and IPv6, in four cgroup
 * hooks per family:
 *
 *   connect4/6     connect() of a TCP, UDP or SCTP socket to a Service
 *                  frontend (ClusterIP:port) goes to one of its backends;
 *   sendmsg4/6     so does each sendto()/sendmsg() of an unconnected UDP socket;
 *   recvmsg4/6     recvfrom()/recvmsg() of such a socket reports the frontend
 *                  as the source of the backend's replies;
 *   getpeername4/6 getpeername() of a connected socket reports the frontend.
 *
 * The forward hooks run once per connection (or datagram of an unconnected
 * socket), so there is no per-packet NAT and no conntrack; they record what
 * they rewrote in lb4_reverse_sk / lb6_reverse_sk for the reverse hooks, and,
 * for Services with session affinity, which backend each client was given in
 * lb4_affinity / lb6_affinity. See lb.h for the map layouts, why a service
 * can never be seen torn, why the reverse map is keyed by socket cookie and
 * the affinity map by network namespace.
 *
 * The logic is written once, in sock_lb_xlate.h, instantiated per family.
 * An IPv6 hook given an IPv4-mapped address (a dual-stack IPv6 socket
 * dialling an IPv4 address, ::ffff:a.b.c.d) translates it with the IPv4
 * maps, as cilium's bpf_sock does: the kernel runs connect6 and getpeername6
 * for such a socket, and recvmsg6 for its IPv4 datagrams, never their IPv4
 * twins (only an unconnected send to a mapped address runs sendmsg4).
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lb.h"

#define ENOMEM 12
#define ECONNREFUSED 111

#define NSEC_PER_SEC 1000000000ULL

/*
 * Verdicts of the cgroup/sock_addr hooks: 1 lets the syscall go on, 0 fails
 * it. The recvmsg and getpeername hooks must always return 1 (the verifier
 * enforces it): they can only rewrite the address the application is given.
 */
#define SYSCALL_ALLOW 1
#define SYSCALL_REJECT 0

/* What the forward translation did, besides a negative errno (sock_lb_xlate.h). */
#define XLATE_PASS 0 /* not a Service frontend: the socket is left alone */
#define XLATE_DONE 1 /* the destination is now a backend */

#ifdef NODELET_PIN_BY_NAME
/*
 * The pinned build (sock_lb_pinned.bpf.o): the loader opens <pin dir>/<map>
 * if it exists, so a restarted agent programs the maps the attached programs
 * read, the programs swapped in keep answering for the sockets the previous
 * ones translated, and clients keep their backends. A separate object
 * because aya pins such maps under /sys/fs/bpf when no pin directory is
 * given.
 */
#define PINNED_BY_NAME __uint(pinning, LIBBPF_PIN_BY_NAME);
#else
#define PINNED_BY_NAME
#endif

/* max_entries of every map is overridden by the loader from MapSizes. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb4_key);
	__type(value, struct lb4_value);
	__uint(max_entries, 65536);
	PINNED_BY_NAME
} lb4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_reverse_key);
	__type(value, struct lb4_reverse_value);
	__uint(max_entries, 65536);
	PINNED_BY_NAME
} lb4_reverse_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb4_affinity_key);
	__type(value, struct lb4_affinity_value);
	__uint(max_entries, 65536);
	PINNED_BY_NAME
} lb4_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb6_key);
	__type(value, struct lb6_value);
	__uint(max_entries, 65536);
	PINNED_BY_NAME
} lb6_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb6_reverse_key);
	__type(value, struct lb6_reverse_value);
	__uint(max_entries, 65536);
	PINNED_BY_NAME
} lb6_reverse_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb6_affinity_key);
	__type(value, struct lb6_affinity_value);
	__uint(max_entries, 65536);
	PINNED_BY_NAME
} lb6_affinity SEC(".maps");

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
 * Whether an affinity entry last used at `last_used` is more than `timeout`
 * ns old at `now`. A last_used a little after `now` (another CPU refreshed
 * the entry meanwhile) is fresh, not an old time wrapped around.
 */
static __always_inline int expired(__u64 last_used, __u64 now, __u64 timeout)
{
	return last_used < now && now - last_used > timeout;
}

/* The address types of the two families, and their comparison. */
typedef __be32 lb4_addr_t;
typedef struct lb6_addr lb6_addr_t;

static __always_inline bool addr4_eq(lb4_addr_t a, lb4_addr_t b)
{
	return a == b;
}

static __always_inline bool addr6_eq(lb6_addr_t a, lb6_addr_t b)
{
	return a.word[0] == b.word[0] && a.word[1] == b.word[1] && a.word[2] == b.word[2] && a.word[3] == b.word[3];
}

#define FAMILY 4
#include "sock_lb_xlate.h"
#undef FAMILY

#define FAMILY 6
#include "sock_lb_xlate.h"
#undef FAMILY

/* The port of a socket address: network order, in the low 16 bits of user_port. */
static __always_inline __be16 ctx_port(const struct bpf_sock_addr *ctx)
{
	return (__be16)ctx->user_port;
}

static __always_inline lb6_addr_t ctx_ip6(const struct bpf_sock_addr *ctx)
{
	lb6_addr_t address = {
		.word = { ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3] },
	};
	return address;
}

static __always_inline void ctx_set_ip6(struct bpf_sock_addr *ctx, const lb6_addr_t *address)
{
	ctx->user_ip6[0] = address->word[0];
	ctx->user_ip6[1] = address->word[1];
	ctx->user_ip6[2] = address->word[2];
	ctx->user_ip6[3] = address->word[3];
}

/* Whether `address` is IPv4-mapped (::ffff:a.b.c.d, the IPv4 address in its last word). */
static __always_inline bool is_v4_mapped(const lb6_addr_t *address)
{
	return address->word[0] == 0 && address->word[1] == 0 && address->word[2] == bpf_htonl(0xffff);
}

/* The verdict of a forward hook from what xlate_fwd returned: an errno fails the syscall. */
static __always_inline int verdict(int xlate)
{
	if (xlate < 0) {
		bpf_set_retval(xlate);
		return SYSCALL_REJECT;
	}
	return SYSCALL_ALLOW;
}

/*
 * Forward translation of an IPv4 destination `address`. On success the
 * backend is written to user_ip4, or, for an IPv6 socket dialling an
 * IPv4-mapped address, to the last word of user_ip6, keeping it mapped.
 */
static __always_inline int forward4(struct bpf_sock_addr *ctx, __be32 address, bool mapped)
{
	struct lb4_key frontend = {
		.address = address,
		.dport = ctx_port(ctx),
		.proto = (__u8)ctx->protocol,
		.slot = LB_MASTER_SLOT,
	};
	struct backend4 backend;
	int ret = xlate_fwd4(ctx, &frontend, &backend);

	if (ret == XLATE_DONE) {
		if (mapped)
			ctx->user_ip6[3] = backend.address;
		else
			ctx->user_ip4 = backend.address;
		ctx->user_port = (__u32)backend.port;
	}
	return verdict(ret);
}

static __always_inline int forward6(struct bpf_sock_addr *ctx)
{
	struct lb6_key frontend = {
		.address = ctx_ip6(ctx),
		.dport = ctx_port(ctx),
		.proto = (__u8)ctx->protocol,
		.slot = LB_MASTER_SLOT,
	};
	struct backend6 backend;
	int ret;

	if (is_v4_mapped(&frontend.address))
		return forward4(ctx, frontend.address.word[3], true);
	ret = xlate_fwd6(ctx, &frontend, &backend);
	if (ret == XLATE_DONE) {
		ctx_set_ip6(ctx, &backend.address);
		ctx->user_port = (__u32)backend.port;
	}
	return verdict(ret);
}

/* Reverse translation of the address in user_ip4 (or user_ip6's last word when `mapped`). */
static __always_inline void reverse4(struct bpf_sock_addr *ctx, __be32 address, bool mapped)
{
	__be16 port = ctx_port(ctx);

	if (!xlate_rev4(ctx, &address, &port))
		return;
	if (mapped)
		ctx->user_ip6[3] = address;
	else
		ctx->user_ip4 = address;
	ctx->user_port = (__u32)port;
}

static __always_inline void reverse6(struct bpf_sock_addr *ctx)
{
	lb6_addr_t address = ctx_ip6(ctx);
	__be16 port = ctx_port(ctx);

	if (is_v4_mapped(&address)) {
		reverse4(ctx, address.word[3], true);
		return;
	}
	if (!xlate_rev6(ctx, &address, &port))
		return;
	ctx_set_ip6(ctx, &address);
	ctx->user_port = (__u32)port;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	return forward4(ctx, ctx->user_ip4, false);
}

/* Runs only for sends that name a destination (unconnected UDP sockets). */
SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return forward4(ctx, ctx->user_ip4, false);
}

/* Runs only for UDP receives that ask for the source address. */
SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	reverse4(ctx, ctx->user_ip4, false);
	return SYSCALL_ALLOW;
}

/* 14 characters: the kernel keeps 15 of a program's name. */
SEC("cgroup/getpeername4")
int sock4_peername(struct bpf_sock_addr *ctx)
{
	reverse4(ctx, ctx->user_ip4, false);
	return SYSCALL_ALLOW;
}

SEC("cgroup/connect6")
int sock6_connect(struct bpf_sock_addr *ctx)
{
	return forward6(ctx);
}

/*
 * Runs only for sends that name a destination (unconnected UDP sockets) and
 * only for IPv6 ones: udpv6_sendmsg hands a send to an IPv4-mapped address
 * to udp_sendmsg, which runs sendmsg4 with the IPv4 address.
 */
SEC("cgroup/sendmsg6")
int sock6_sendmsg(struct bpf_sock_addr *ctx)
{
	return forward6(ctx);
}

/* Also runs for IPv4 datagrams of a dual-stack socket (the source IPv4-mapped). */
SEC("cgroup/recvmsg6")
int sock6_recvmsg(struct bpf_sock_addr *ctx)
{
	reverse6(ctx);
	return SYSCALL_ALLOW;
}

SEC("cgroup/getpeername6")
int sock6_peername(struct bpf_sock_addr *ctx)
{
	reverse6(ctx);
	return SYSCALL_ALLOW;
}

char LICENSE[] SEC("license") = "GPL";
