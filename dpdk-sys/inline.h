/*
 * Exported wrappers for DPDK's `static inline` functions, which have no
 * symbol for Rust to link against. Each is a one-line forwarder, compiled
 * with the same cflags as the bindings so struct layouts agree.
 */
#ifndef HDVRF_INLINE_H
#define HDVRF_INLINE_H
#include <stdint.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ring.h>
#include <rte_lpm.h>

int hdvrf_rte_errno(void);
unsigned hdvrf_rte_lcore_id(void);
uint64_t hdvrf_rte_rdtsc(void);
uint64_t hdvrf_rte_get_tsc_hz(void);
uint16_t hdvrf_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                                struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t hdvrf_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                                struct rte_mbuf **tx_pkts, uint16_t nb_pkts);
struct rte_mbuf *hdvrf_rte_pktmbuf_alloc(struct rte_mempool *mp);
int hdvrf_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count);
void hdvrf_rte_pktmbuf_free(struct rte_mbuf *m);
char *hdvrf_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len);
unsigned hdvrf_rte_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n);
unsigned hdvrf_rte_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n);
unsigned hdvrf_rte_ring_count(const struct rte_ring *r);
int hdvrf_rte_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips,
                              uint32_t *next_hops, unsigned n);
#endif
