// SPDX-License-Identifier: GPL-2.0-only
/*
 * Load-balancing of traffic entering the node, in two tc programs (tcx
 * links where the kernel has them), IPv4, TCP and UDP:
 *
 *   np4_ingress  on the node's external interfaces: a packet to a frontend
 *                (NodePort on a node address, externalIP, LoadBalancer IP)
 *                is checked against the frontend's loadBalancerSourceRanges,
 *                given a backend (conntrack first, else the frontend's Maglev
 *                table) and DNATed to it. To a pod of this node, the kernel
 *                then routes it, and the client's address is kept; to a
 *                backend on another node (externalTrafficPolicy: Cluster), it
 *                is SNATed to the node's address and redirected straight back
 *                out, and that backend's replies, arriving here too, are
 *                translated back and redirected to the client.
 *   np4_reply    on the pod-facing side (the pod bridge, whose ingress sees
 *                what pods send to the node): a reply of such a flow gets the
 *                frontend back as its source, and is redirected to the
 *                interface the FIB names (passed up instead, the kernel would
 *                drop it: its source is now one of the node's addresses).
 *
 * Modelled on cilium's nodeport.h (lb4_local, conntrack, rev DNAT, SNAT and
 * the fib_redirect hairpin); map layouts
 * and why they are so in lb.h.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "lb.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_P_IP 0x0800
#define ETH_HLEN 14
#define ETH_ALEN 6
#define AF_INET 2
#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define TCP_FLAG_BYTE 13 /* offset of the flags byte in the TCP header */
#define TCP_SYN 0x02
#define TCP_ACK 0x10


/*
 * The IPv4 header as on the wire. Not vmlinux.h's struct iphdr: its fields
 * carry CO-RE relocations (preserve_access_index), which wire formats never
 * need, and offsets of fixed formats must stay plain constants.
 */
struct ipv4_header {
	__u8 version_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

#define IP_TTL_OFF (ETH_HLEN + 8)
#define IP_CHECK_OFF (ETH_HLEN + 10)
#define IP_SADDR_OFF (ETH_HLEN + 12)
#define IP_DADDR_OFF (ETH_HLEN + 16)
/* Offsets in the TCP and UDP headers. */
#define L4_SPORT_OFF 0
#define L4_DPORT_OFF 2
#define TCP_CHECK_OFF 16
#define UDP_CHECK_OFF 6

/* max_entries of every map is overridden by the loader from NodePortMapSizes. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct np4_key);
	__type(value, struct np4_service);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} np4_services SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct np4_range_key);
	__type(value, __u8);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} np4_source_ranges SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct np4_ct_key);
	__type(value, struct np4_ct_value);
	__uint(max_entries, 262144);
} np4_conntrack SEC(".maps");

/* What a program needs of an IPv4 TCP or UDP packet. */
struct flow {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 ttl;
	__u32 l4_off; /* offset of the TCP or UDP header from the Ethernet header */
};

/*
 * Parse an Ethernet + IPv4 + TCP/UDP packet. Fragments are left to the
 * kernel (0): only a first fragment carries the ports, and the others could
 * not follow it to the same backend.
 */
static __always_inline int parse_flow(struct __sk_buff *skb, struct flow *flow)
{
	struct ipv4_header ip;
	__be16 ports[2];

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)) < 0)
		return 0;
	if ((ip.version_ihl >> 4) != 4 || (ip.version_ihl & 0xf) < 5)
		return 0;
	if (ip.frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return 0;
	if (ip.protocol != IPPROTO_TCP && ip.protocol != IPPROTO_UDP)
		return 0;
	flow->l4_off = ETH_HLEN + (ip.version_ihl & 0xf) * 4;
	if (bpf_skb_load_bytes(skb, flow->l4_off, ports, sizeof(ports)) < 0)
		return 0;
	flow->tcp_flags = 0;
	if (ip.protocol == IPPROTO_TCP && bpf_skb_load_bytes(skb, flow->l4_off + TCP_FLAG_BYTE, &flow->tcp_flags, 1) < 0)
		return 0;
	flow->saddr = ip.saddr;
	flow->daddr = ip.daddr;
	flow->sport = ports[0];
	flow->dport = ports[1];
	flow->proto = ip.protocol;
	flow->ttl = ip.ttl;
	return 1;
}

/* splitmix64's finalizer over the 5-tuple: the Maglev slot of a flow. */
static __always_inline __u32 flow_hash(const struct flow *flow)
{
	__u64 h = ((__u64)flow->saddr << 32) | flow->daddr;

	h ^= ((__u64)flow->sport << 48) | ((__u64)flow->dport << 32) | flow->proto;
	h ^= h >> 30;
	h *= 0xbf58476d1ce4e5b9ULL;
	h ^= h >> 27;
	h *= 0x94d049bb133111ebULL;
	h ^= h >> 31;
	return (__u32)h;
}

static __always_inline __u32 l4_csum_off(const struct flow *flow)
{
	return flow->l4_off + (flow->proto == IPPROTO_TCP ? TCP_CHECK_OFF : UDP_CHECK_OFF);
}

/* UDP's checksum 0 means "none": the helpers must leave it so. */
static __always_inline __u64 l4_csum_flags(const struct flow *flow)
{
	return flow->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
}

/*
 * Rewrite the address at addr_off and the port at port_off (destination or
 * source), with the IPv4 header checksum and the TCP/UDP checksum (pseudo
 * header for the address) updated incrementally.
 */
static __always_inline int rewrite(struct __sk_buff *skb, const struct flow *flow, __u32 addr_off, __be32 old_addr,
				   __be32 new_addr, __u32 port_off, __be16 old_port, __be16 new_port)
{
	__u32 csum_off = l4_csum_off(flow);
	__u64 flags = l4_csum_flags(flow);

	if (bpf_l4_csum_replace(skb, csum_off, old_addr, new_addr, flags | BPF_F_PSEUDO_HDR | sizeof(new_addr)) < 0)
		return -1;
	if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, flags | sizeof(new_port)) < 0)
		return -1;
	if (bpf_l3_csum_replace(skb, IP_CHECK_OFF, old_addr, new_addr, sizeof(new_addr)) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &new_addr, sizeof(new_addr), 0) < 0)
		return -1;
	if (bpf_skb_store_bytes(skb, port_off, &new_port, sizeof(new_port), 0) < 0)
		return -1;
	return 0;
}

/* Whether a loadBalancerSourceRanges entry of the frontend covers the source. */
static __always_inline bool source_allowed(const struct np4_key *frontend, __be32 saddr)
{
	struct np4_range_key key = {
		.prefixlen = 8 * sizeof(struct np4_range),
		.data = { .frontend = *frontend, .source = saddr },
	};

	return bpf_map_lookup_elem(&np4_source_ranges, &key) != NULL;
}

/* Send the packet out of the interface the FIB picks for daddr, as a router would. */
static __always_inline int redirect_by_fib(struct __sk_buff *skb, __u8 proto, __be32 saddr, __be32 daddr)
{
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = proto,
		.ipv4_src = saddr,
		.ipv4_dst = daddr,
		.ifindex = skb->ingress_ifindex,
		/* tot_len 0: no MTU check, a GSO packet is segmented on its way out. */
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);

	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (bpf_skb_store_bytes(skb, 0, fib.dmac, ETH_ALEN, 0) < 0 ||
		    bpf_skb_store_bytes(skb, ETH_ALEN, fib.smac, ETH_ALEN, 0) < 0)
			return TC_ACT_SHOT;
		return bpf_redirect(fib.ifindex, 0);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = fib.ipv4_dst };
		return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
	}
	return TC_ACT_SHOT;
}

/* Decrement the TTL as the forwarding the redirect bypasses would. */
static __always_inline int decrement_ttl(struct __sk_buff *skb, const struct flow *flow)
{
	__u8 ttl = flow->ttl - 1;

	if (flow->ttl <= 1)
		return -1;
	/* The TTL is the high byte of the 16-bit word it shares with the protocol. */
	if (bpf_l3_csum_replace(skb, IP_CHECK_OFF, bpf_htons((__u16)flow->ttl << 8), bpf_htons((__u16)ttl << 8), 2) < 0)
		return -1;
	return bpf_skb_store_bytes(skb, IP_TTL_OFF, &ttl, 1, 0);
}

/* The node's address towards `backend`: the source the FIB prefers (0 when unroutable). */
static __always_inline __be32 snat_address(struct __sk_buff *skb, __u8 proto, __be32 backend)
{
	struct bpf_fib_lookup fib = {
		.family = AF_INET,
		.l4_protocol = proto,
		.ipv4_dst = backend,
		.ifindex = skb->ingress_ifindex,
	};
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SRC);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	return fib.ipv4_src;
}

/* Tries at a free SNAT port before a new flow is dropped (the range is full). */
#define SNAT_PORT_TRIES 16

/*
 * Record a SNATed flow's reply entry under a free source port of the SNAT
 * range (random, as cilium picks them; BPF_NOEXIST makes the claim atomic),
 * and set the forward entry's nat fields to it. -1: no port was free.
 */
static __always_inline int claim_snat_port(const struct flow *flow, struct np4_ct_value *backend, __be32 snat)
{
	struct np4_ct_key reply = {
		.saddr = backend->address,
		.daddr = snat,
		.sport = backend->port,
		.proto = flow->proto,
		.dir = NP_CT_REPLY,
	};
	struct np4_ct_value client = {
		.address = flow->daddr,
		.port = flow->dport,
		.flags = NP_CT_SNAT,
		.nat_address = flow->saddr,
		.nat_port = flow->sport,
	};

	for (int i = 0; i < SNAT_PORT_TRIES; i++) {
		__u16 port = NP_SNAT_PORT_MIN + bpf_get_prandom_u32() % (NP_SNAT_PORT_MAX - NP_SNAT_PORT_MIN + 1);

		reply.dport = bpf_htons(port);
		if (bpf_map_update_elem(&np4_conntrack, &reply, &client, BPF_NOEXIST) == 0) {
			backend->flags = NP_CT_SNAT;
			backend->nat_address = snat;
			backend->nat_port = reply.dport;
			return 0;
		}
	}
	return -1;
}

/*
 * The backend of a new flow from the frontend's Maglev table, recorded in
 * conntrack in both directions; -1 when the frontend has no backend (or a
 * remote one cannot be reached).
 */
static __always_inline int pick_backend(struct __sk_buff *skb, const struct flow *flow,
					const struct np4_service *svc, struct np4_ct_value *backend)
{
	__u32 slot = flow_hash(flow) % LB_MAGLEV_SIZE;
	__u32 index;

	/* The verifier does not bound a modulo: hide the range from clang so that the
	 * check it would drop as redundant stays, and bounds slot for the verifier. */
	asm volatile("" : "+r"(slot));
	if (slot >= LB_MAGLEV_SIZE)
		return -1;
	index = svc->maglev[slot];
	if (index >= svc->count || index >= LB_MAX_BACKENDS)
		return -1;
	__builtin_memset(backend, 0, sizeof(*backend));
	backend->address = svc->backends[index].address;
	backend->port = svc->backends[index].port;

	if (svc->backends[index].flags & NP_BACKEND_REMOTE) {
		__be32 snat = snat_address(skb, flow->proto, backend->address);
		if (!snat || claim_snat_port(flow, backend, snat) < 0)
			return -1;
	} else {
		struct np4_ct_key reply = {
			.saddr = backend->address,
			.daddr = flow->saddr,
			.sport = backend->port,
			.dport = flow->sport,
			.proto = flow->proto,
			.dir = NP_CT_REPLY,
		};
		struct np4_ct_value frontend = { .address = flow->daddr, .port = flow->dport };

		if (bpf_map_update_elem(&np4_conntrack, &reply, &frontend, BPF_ANY) < 0)
			return -1;
	}

	struct np4_ct_key forward = {
		.saddr = flow->saddr,
		.daddr = flow->daddr,
		.sport = flow->sport,
		.dport = flow->dport,
		.proto = flow->proto,
		.dir = NP_CT_FORWARD,
	};
	if (bpf_map_update_elem(&np4_conntrack, &forward, backend, BPF_ANY) < 0)
		return -1;
	return 0;
}

/* A TCP SYN without ACK opens a new connection, even on a 5-tuple conntrack still holds. */
static __always_inline bool new_connection(const struct flow *flow)
{
	return flow->proto == IPPROTO_TCP && (flow->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN;
}

/*
 * A packet to a frontend: DNAT to the flow's backend. A local backend is
 * left to the kernel to route to the pod; a remote one also gets the SNAT
 * source and goes straight back out.
 */
static __always_inline int to_backend(struct __sk_buff *skb, const struct flow *flow, const struct np4_service *svc,
				      const struct np4_key *frontend)
{
	struct np4_ct_value backend;

	if ((svc->flags & NP_FLAG_SOURCE_RANGES) && !source_allowed(frontend, flow->saddr))
		return TC_ACT_SHOT;
	struct np4_ct_key forward = {
		.saddr = flow->saddr,
		.daddr = flow->daddr,
		.sport = flow->sport,
		.dport = flow->dport,
		.proto = flow->proto,
		.dir = NP_CT_FORWARD,
	};
	struct np4_ct_value *tracked = bpf_map_lookup_elem(&np4_conntrack, &forward);
	/* A SNATed flow keeps its entry even for a SYN: a retransmitted SYN must keep its port. */
	if (tracked && (!new_connection(flow) || (tracked->flags & NP_CT_SNAT))) {
		backend = *tracked;
	} else if (pick_backend(skb, flow, svc, &backend) < 0) {
		return TC_ACT_SHOT;
	}
	if (rewrite(skb, flow, IP_DADDR_OFF, flow->daddr, backend.address, flow->l4_off + L4_DPORT_OFF, flow->dport,
		    backend.port) < 0)
		return TC_ACT_SHOT;
	if (!(backend.flags & NP_CT_SNAT))
		return TC_ACT_OK;
	if (rewrite(skb, flow, IP_SADDR_OFF, flow->saddr, backend.nat_address, flow->l4_off + L4_SPORT_OFF,
		    flow->sport, backend.nat_port) < 0)
		return TC_ACT_SHOT;
	if (decrement_ttl(skb, flow) < 0)
		return TC_ACT_SHOT;
	return redirect_by_fib(skb, flow->proto, backend.nat_address, backend.address);
}

/*
 * A remote backend's reply to a SNATed flow: from the frontend to the
 * client, straight back out. Anything else is the kernel's.
 */
static __always_inline int from_remote_backend(struct __sk_buff *skb, const struct flow *flow)
{
	struct np4_ct_key reply = {
		.saddr = flow->saddr,
		.daddr = flow->daddr,
		.sport = flow->sport,
		.dport = flow->dport,
		.proto = flow->proto,
		.dir = NP_CT_REPLY,
	};
	struct np4_ct_value *tracked = bpf_map_lookup_elem(&np4_conntrack, &reply);
	if (!tracked || !(tracked->flags & NP_CT_SNAT))
		return TC_ACT_OK;
	struct np4_ct_value nat = *tracked;

	if (rewrite(skb, flow, IP_DADDR_OFF, flow->daddr, nat.nat_address, flow->l4_off + L4_DPORT_OFF, flow->dport,
		    nat.nat_port) < 0)
		return TC_ACT_SHOT;
	if (rewrite(skb, flow, IP_SADDR_OFF, flow->saddr, nat.address, flow->l4_off + L4_SPORT_OFF, flow->sport,
		    nat.port) < 0)
		return TC_ACT_SHOT;
	if (decrement_ttl(skb, flow) < 0)
		return TC_ACT_SHOT;
	return redirect_by_fib(skb, flow->proto, nat.address, nat.nat_address);
}

SEC("classifier")
int np4_ingress(struct __sk_buff *skb)
{
	struct flow flow;

	if (!parse_flow(skb, &flow))
		return TC_ACT_OK;
	struct np4_key frontend = { .address = flow.daddr, .dport = flow.dport, .proto = flow.proto };
	struct np4_service *svc = bpf_map_lookup_elem(&np4_services, &frontend);
	if (svc)
		return to_backend(skb, &flow, svc, &frontend);
	return from_remote_backend(skb, &flow);
}

SEC("classifier")
int np4_reply(struct __sk_buff *skb)
{
	struct flow flow;

	if (!parse_flow(skb, &flow))
		return TC_ACT_OK;
	struct np4_ct_key reply = {
		.saddr = flow.saddr,
		.daddr = flow.daddr,
		.sport = flow.sport,
		.dport = flow.dport,
		.proto = flow.proto,
		.dir = NP_CT_REPLY,
	};
	struct np4_ct_value *frontend = bpf_map_lookup_elem(&np4_conntrack, &reply);
	if (!frontend || (frontend->flags & NP_CT_SNAT))
		return TC_ACT_OK;
	__be32 address = frontend->address;
	__be16 port = frontend->port;
	if (rewrite(skb, &flow, IP_SADDR_OFF, flow.saddr, address, flow.l4_off + L4_SPORT_OFF, flow.sport, port) < 0)
		return TC_ACT_SHOT;
	if (decrement_ttl(skb, &flow) < 0)
		return TC_ACT_SHOT;
	return redirect_by_fib(skb, flow.proto, address, flow.daddr);
}

char LICENSE[] SEC("license") = "GPL";
