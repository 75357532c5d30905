#include "inline.h"
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_cycles.h>

int hdvrf_rte_errno(void) { return rte_errno; }
unsigned hdvrf_rte_lcore_id(void) { return rte_lcore_id(); }
uint64_t hdvrf_rte_rdtsc(void) { return rte_rdtsc(); }
uint64_t hdvrf_rte_get_tsc_hz(void) { return rte_get_tsc_hz(); }

uint16_t hdvrf_rte_eth_rx_burst(uint16_t port_id, uint16_t queue_id,
                                struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t hdvrf_rte_eth_tx_burst(uint16_t port_id, uint16_t queue_id,
                                struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *hdvrf_rte_pktmbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }

int hdvrf_rte_pktmbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **mbufs, unsigned count)
{
	return rte_pktmbuf_alloc_bulk(mp, mbufs, count);
}

void hdvrf_rte_pktmbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }

char *hdvrf_rte_pktmbuf_append(struct rte_mbuf *m, uint16_t len) { return rte_pktmbuf_append(m, len); }

unsigned hdvrf_rte_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned hdvrf_rte_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned hdvrf_rte_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

int hdvrf_rte_lpm_lookup_bulk(const struct rte_lpm *lpm, const uint32_t *ips,
                              uint32_t *next_hops, unsigned n)
{
	return rte_lpm_lookup_bulk(lpm, ips, next_hops, n);
}
