/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Map layouts of the socket load-balancer: the single source of truth.
 * ebpf/src/layout.rs mirrors these structs; build.rs reads the layout clang
 * used from the object's BTF, and const assertions fail the Rust build when
 * the mirror no longer matches, so any change here must be made there too.
 *
 * Each address family has its maps: lb4_* for IPv4 and lb6_* for IPv6, the
 * same layouts with a 16-byte address in place of a 4-byte one (the lb6
 * structs at the end of this file). What is said here of lb4 holds for lb6.
 * An IPv4-mapped IPv6 address (::ffff:a.b.c.d, what a dual-stack IPv6 socket
 * dials to reach an IPv4 address) is looked up in the lb4 maps, as cilium
 * does: the lb6 maps never hold one.
 *
 * Forward layout (lb4_services, one hash map keyed by frontend + slot):
 *
 *   (vip, port, proto, slot 0, rev 0) -> master  { count, rev = r, flags, affinity_timeout }
 *   (vip, port, proto, slot i, rev r) -> backend { address, port }  i in 1..=count
 *
 * Why revisions instead of cilium's in-place slots + backend-id map: to
 * replace a service's backends the loader writes the complete new set under
 * a fresh revision r', then flips the master entry to { count', r' } with a
 * single map update (atomic for one element), and only then deletes the
 * slots of the old revision. A connect() reads the master once and picks a
 * slot of that revision, so it sees either the whole old set or the whole
 * new set, never a mix, and never a count larger than the slots present.
 * Backends are stored inline in the slots: without conntrack there is no
 * need for shared backend ids, and each service stays self-contained (no
 * reference counting of backends shared between services).
 *
 * How the layouts change: fields are only ever appended, and a zero field
 * means what the layout meant before it existed (flags 0 = no session
 * affinity). A pinned map created by an older nodelet then holds a prefix of
 * each new value: the loader recreates the map with the new value size and
 * copies every entry over, zero-extended, before the new programs replace
 * the old ones (ebpf/src/pin/stale.rs), so no connect() finds the map
 * empty. Any other change (key size, map type, a shorter value) recreates
 * the map empty, and the next sync rewrites it.
 *
 * All addresses and ports are in network byte order, exactly as found in
 * struct bpf_sock_addr, so the program never converts them.
 */
#ifndef NODELET_LB_H
#define NODELET_LB_H

/* Slot number of the master entry of a frontend. */
#define LB_MASTER_SLOT 0
/* Upper bound of backends per frontend; keeps the verifier happy too. */
#define LB_MAX_BACKENDS 1024

struct lb4_key {
	__be32 address; /* frontend (service) IPv4 address */
	__be16 dport;   /* frontend port */
	__u8 proto;     /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP */
	__u8 pad;       /* always 0: keys are compared as bytes */
	__u16 slot;     /* 0 = master, 1..=count = backends (host order) */
	__u16 rev;      /* 0 for the master, its revision for slots (host order) */
};

/* Flags of a master entry. LB_FLAG_AFFINITY: sessionAffinity: ClientIP (lb4_affinity below). */
#define LB_FLAG_AFFINITY 0x1
/*
 * Bits 8-10 of a master's flags: the frontend's kind (LB_KIND_*), for `nodelet proxy list`
 * only, as cilium keeps its service types in its service value; the programs ignore them.
 */
#define LB_KIND_SHIFT 8
#define LB_KIND_MASK 0x700

/*
 * Value of both kinds of entries (like cilium's lb4_service): a master uses
 * count, rev, flags and affinity_timeout, a backend slot uses address and
 * port; unused fields are 0. 16 bytes, no implicit padding: the kernel copies
 * values as bytes, and a hash map rounds a 12-byte value up to 16 anyway.
 */
struct lb4_value {
	__be32 address;         /* slot: backend IPv4 address */
	__be16 port;            /* slot: backend port */
	__u16 count;            /* master: number of backend slots; 0 = ECONNREFUSED */
	__u16 rev;              /* master: revision whose slots are current */
	__u16 flags;            /* master: LB_FLAG_* */
	__u32 affinity_timeout; /* master: seconds a client keeps its backend (LB_FLAG_AFFINITY) */
};

/*
 * Reverse translation (lb4_reverse_sk, an LRU hash map): one entry per socket
 * and backend that the forward hooks (connect4, sendmsg4) sent somewhere:
 *
 *   (socket cookie, backend addr, backend port) -> frontend { addr, port }
 *
 * recvmsg4 looks up the source of a datagram and getpeername4 the peer of a
 * connected socket under the socket's own cookie, and report the frontend the
 * application dialled instead of the backend. Why keyed by socket cookie
 * rather than a backend -> frontend map: one pod is often the backend of
 * several Services (or of both ports of one), so the backend alone cannot
 * tell which ClusterIP a given socket used; the cookie can, and entries of
 * different sockets never interfere. Why not socket storage: an unconnected
 * UDP socket may talk to several Services, each its own entry. The map is
 * LRU because nothing deletes entries when sockets close: the least recently
 * used make room when it is full. Eviction never misroutes traffic: a TCP
 * connection whose entry went reports its backend to getpeername(), and a UDP
 * socket's next send writes its entry again (only a reply already on its way
 * when the entry went is shown with the backend's address). An entry whose
 * frontend no longer exists in lb4_services is deleted by the reverse hooks
 * on sight instead of being applied.
 */
struct lb4_reverse_key {
	__u64 cookie;   /* bpf_get_socket_cookie() of the client socket */
	__be32 address; /* backend IPv4 address */
	__be16 port;    /* backend port */
	__u16 pad;      /* always 0: keys are compared as bytes */
};

struct lb4_reverse_value {
	__be32 address; /* frontend (service) IPv4 address the socket dialled */
	__be16 port;    /* frontend port */
	__u16 pad;      /* always 0 */
};

/*
 * Session affinity (lb4_affinity, an LRU hash map), for frontends whose
 * master has LB_FLAG_AFFINITY (a Service with sessionAffinity: ClientIP):
 *
 *   (client netns cookie, frontend) -> { backend, last used, where it was }
 *
 * The client is its network namespace (bpf_get_netns_cookie), as cilium's
 * socket load-balancer does: the hooks run before the socket has a source
 * address, and a pod's network namespace is its IP, so this is kube-proxy's
 * ClientIP at socket level (host-network processes share the node's).
 * connect4 and sendmsg4 reuse the remembered backend while it was used less
 * than affinity_timeout seconds ago and is still a backend of the frontend;
 * otherwise they pick one as usual and remember it. Each use refreshes
 * last_used, as kube-proxy's `recent` match does, so the timeout counts from
 * the last connection, not the first.
 *
 * Why (rev, slot) besides the backend: while the frontend's revision is the
 * one remembered, the backend is still at that slot (a revision's slots are
 * written once), so checking it costs one lookup; the slot's address and
 * port are compared all the same, so a revision number reused after
 * wrapping around cannot mislead. After a replace the slots of the new revision are searched for the backend
 * once (bounded by LB_MAX_BACKENDS, with bpf_loop) and the entry is moved to
 * where it was found, so affinity survives scaling as long as the backend
 * does. The map is LRU: entries of clients gone idle make room; losing one
 * only means the client's next connection picks afresh.
 */
struct lb4_affinity_key {
	__u64 client;   /* bpf_get_netns_cookie() of the client socket */
	__be32 address; /* frontend (service) IPv4 address */
	__be16 dport;   /* frontend port */
	__u8 proto;     /* IPPROTO_* of the frontend */
	__u8 pad;       /* always 0: keys are compared as bytes */
};

struct lb4_affinity_value {
	__u64 last_used; /* bpf_ktime_get_boot_ns() of the last connection that used it */
	__be32 address;  /* backend IPv4 address */
	__be16 port;     /* backend port */
	__u16 rev;       /* revision of the frontend the backend was found in ... */
	__u16 slot;      /* ... and its slot there */
	__u16 pad[3];    /* always 0 */
};

/*
 * IPv6: the same maps (lb6_services, lb6_reverse_sk, lb6_affinity) and the
 * same fields, in the same order, with the address widened to 16 bytes;
 * explicit padding keeps every struct free of implicit padding.
 */

/* An IPv6 address in network byte order, as bpf_sock_addr.user_ip6 holds it. */
struct lb6_addr {
	__be32 word[4];
};

struct lb6_key {
	struct lb6_addr address; /* frontend (service) IPv6 address */
	__be16 dport;            /* frontend port */
	__u8 proto;              /* IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP */
	__u8 pad;                /* always 0: keys are compared as bytes */
	__u16 slot;              /* 0 = master, 1..=count = backends (host order) */
	__u16 rev;               /* 0 for the master, its revision for slots (host order) */
};

struct lb6_value {
	struct lb6_addr address; /* slot: backend IPv6 address */
	__be16 port;             /* slot: backend port */
	__u16 count;             /* master: number of backend slots; 0 = ECONNREFUSED */
	__u16 rev;               /* master: revision whose slots are current */
	__u16 flags;             /* master: LB_FLAG_* */
	__u32 affinity_timeout;  /* master: seconds a client keeps its backend (LB_FLAG_AFFINITY) */
};

struct lb6_reverse_key {
	__u64 cookie;            /* bpf_get_socket_cookie() of the client socket */
	struct lb6_addr address; /* backend IPv6 address */
	__be16 port;             /* backend port */
	__u16 pad[3];            /* always 0: keys are compared as bytes */
};

struct lb6_reverse_value {
	struct lb6_addr address; /* frontend (service) IPv6 address the socket dialled */
	__be16 port;             /* frontend port */
	__u16 pad;               /* always 0 */
};

struct lb6_affinity_key {
	__u64 client;            /* bpf_get_netns_cookie() of the client socket */
	struct lb6_addr address; /* frontend (service) IPv6 address */
	__be16 dport;            /* frontend port */
	__u8 proto;              /* IPPROTO_* of the frontend */
	__u8 pad[5];             /* always 0: keys are compared as bytes */
};

struct lb6_affinity_value {
	__u64 last_used;         /* bpf_ktime_get_boot_ns() of the last connection that used it */
	struct lb6_addr address; /* backend IPv6 address */
	__be16 port;             /* backend port */
	__u16 rev;               /* revision of the frontend the backend was found in ... */
	__u16 slot;              /* ... and its slot there */
	__u16 pad;               /* always 0 */
};

/*
 * Traffic entering the node (nodeport_lb.bpf.c, tc programs): NodePort,
 * externalIPs and LoadBalancer IPs reached from other hosts. IPv4, TCP and
 * UDP. Maps:
 *
 *   np4_services      (HASH, no prealloc)  frontend -> np4_service
 *   np4_source_ranges (LPM_TRIE)           (frontend, source prefix) -> 1
 *   np4_conntrack     (LRU_HASH)           5-tuple + direction -> NAT address
 *
 * Why the backends and the Maglev table live in the frontend's value: one
 * map update replaces a service whole (backends, table and flags), so a
 * packet sees either the old service or the new one, never a table whose
 * slots point past a shorter backend list. The value is large (about 41 KiB)
 * but allocated only for frontends that exist (BPF_F_NO_PREALLOC), and the
 * old value is freed after an RCU grace period, so a packet still reading it
 * is safe.
 *
 * Maglev (Eisenbud et al., NSDI 2016, as cilium uses it): maglev[] has
 * LB_MAGLEV_SIZE (a prime) slots, each the index of a backend in
 * backends[]; the slot of a flow is a hash of its 5-tuple modulo the size.
 * userspace computes the table (ebpf/src/nodeport/maglev.rs): removing one
 * of N backends moves only the flows of that backend, about 1/N of all.
 *
 * A backend on another node (NP_BACKEND_REMOTE, externalTrafficPolicy:
 * Cluster) is reached with the node's address as the source (SNAT, the
 * address the FIB prefers towards the backend) and a port of
 * NP_SNAT_PORT_MIN..=NP_SNAT_PORT_MAX, above the kernel's default ephemeral
 * range (32768-60999) so that the node's own connections do not collide with
 * it; the packet goes straight back out (bpf_fib_lookup + redirect, cilium's
 * hairpin), as do the backend's replies once translated back.
 */
#define LB_MAGLEV_SIZE 16381
/* np4_service.flags: the frontend has loadBalancerSourceRanges in np4_source_ranges. */
#define NP_FLAG_SOURCE_RANGES 0x1
/* np4_backend.flags: the backend is on another node (SNAT). */
#define NP_BACKEND_REMOTE 0x1
/* np4_ct_value.flags: the flow is SNATed to nat_address:nat_port. */
#define NP_CT_SNAT 0x1
/* Source ports of SNATed flows. */
#define NP_SNAT_PORT_MIN 61000
#define NP_SNAT_PORT_MAX 65535
/* np4_ct_key.dir */
#define NP_CT_FORWARD 0 /* client -> frontend: value is the backend */
#define NP_CT_REPLY 1   /* backend -> client: value is the frontend */

struct np4_key {
	__be32 address; /* frontend IPv4 address: a node address, externalIP or LoadBalancer IP */
	__be16 dport;   /* frontend port */
	__u8 proto;     /* IPPROTO_TCP, IPPROTO_UDP */
	__u8 pad;       /* always 0: keys are compared as bytes */
};

struct np4_backend {
	__be32 address; /* backend (pod) IPv4 address */
	__be16 port;    /* backend port */
	__u16 flags;    /* NP_BACKEND_* */
};

struct np4_service {
	__u16 count;  /* backends in use; 0 = drop the frontend's packets */
	__u16 flags;  /* NP_FLAG_* */
	__u32 pad;    /* always 0 */
	struct np4_backend backends[LB_MAX_BACKENDS];
	__u16 maglev[LB_MAGLEV_SIZE]; /* Maglev slot -> index in backends[] (< count) */
	__u16 pad2;   /* always 0: no implicit padding at the end */
};

/*
 * A loadBalancerSourceRanges entry: the LPM key is { prefixlen, frontend,
 * source } with prefixlen = 64 + the range's prefix length, so the frontend
 * always matches whole and the source by its prefix.
 */
struct np4_range {
	struct np4_key frontend;
	__be32 source; /* the range's address, host bits 0 */
};

struct np4_range_key {
	__u32 prefixlen;
	struct np4_range data;
};

/*
 * Conntrack: two entries per flow, written when its first packet picks a
 * backend. NP_CT_FORWARD: (client, frontend) -> backend, so the flow keeps
 * its backend whatever the Maglev table becomes; NP_CT_REPLY: (backend,
 * client) -> frontend, for the reverse translation of the replies. A SNATed
 * flow (NP_CT_SNAT) has nat_address:nat_port, its source towards the
 * backend, in both entries: the forward entry to rewrite the source, and the
 * reply entry, keyed (backend, nat address, backend port, nat port), gives
 * the client there. LRU: idle flows make room; userspace deletes the entries
 * of backends a service lost.
 */
struct np4_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 dir;     /* NP_CT_* */
	__u16 pad;    /* always 0 */
};

struct np4_ct_value {
	__be32 address;     /* NP_CT_FORWARD: the backend; NP_CT_REPLY: the frontend */
	__be16 port;
	__u16 flags;        /* NP_CT_* */
	__be32 nat_address; /* NP_CT_SNAT: forward: the source towards the backend; reply: the client */
	__be16 nat_port;
	__u16 pad;          /* always 0 */
};

#endif /* NODELET_LB_H */
