/*
 * ptb-paced-tx: the DPDK sender of ptnet-bench's P8 (cost at a fixed offered load).
 *
 * testpmd's txonly mode has no software pacing (its rate options are hardware queue rate limits,
 * which virtio-user does not offer), so P8 sends from this small program instead: one
 * net_virtio_user port (the guest side of a vhost-user connection, as testpmd's), frames built
 * like txonly's (a template copied into each freshly allocated mbuf), handed to rte_eth_tx_burst
 * at RATE packets per second, paced on the TSC. It paces exactly as ptnet-pkt-gen -R does: a
 * chunk of min(512, RATE/1000) packets at a time, each chunk sent once the schedule
 * (start + packets / RATE) allows it, sleeping (nanosleep) while the next chunk is more than 20 us
 * away and spinning closer to it. So both senders pay for the same work and the same wake-ups;
 * the DPDK side's other processes (the vhost testpmd, the receiving testpmd) busy-poll, which is
 * how DPDK runs and what an operator pays for it.
 *
 * Written for ptnet-bench and built by it (cc + pkg-config libdpdk); no code taken from DPDK's
 * applications.
 *
 * usage: ptb-paced-tx EAL-ARGS -- RATE_PPS LEN [REPORT_MS]
 * Prints "[  1.000s] 1.000 Mpps 0.480 Gbps" every REPORT_MS (the rate tx_burst accepted), a
 * started line first and a summary when SIGINT or SIGTERM stops it.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>

#define MAX_CHUNK 512
#define TX_BURST 64
#define RING 1024

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "ptb-paced-tx: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* A 60-byte (or longer) UDP/IPv4 frame to the broadcast address. */
static void build_frame(uint8_t *f, unsigned len)
{
	static const uint8_t hdr[42] = {
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01,
		0x08, 0x00,
		0x45, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00,
		0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
		0x04, 0xd2, 0x04, 0xd2, 0x00, 0x1a, 0x00, 0x00,
	};
	memset(f, 0, len);
	memcpy(f, hdr, sizeof(hdr));
	for (unsigned i = sizeof(hdr); i < len; i++)
		f[i] = (uint8_t)i;
}

int main(int argc, char **argv)
{
	int ret = rte_eal_init(argc, argv);
	if (ret < 0)
		die("rte_eal_init", rte_errno);
	argc -= ret;
	argv += ret;
	if (argc < 3) {
		fprintf(stderr, "usage: ptb-paced-tx EAL-ARGS -- RATE_PPS LEN [REPORT_MS]\n");
		return 2;
	}
	uint64_t rate = strtoull(argv[1], NULL, 10);
	unsigned len = (unsigned)strtoul(argv[2], NULL, 10);
	uint64_t report_ms = argc > 3 ? strtoull(argv[3], NULL, 10) : 500;
	if (rate == 0 || len < 60 || len > 1514 || report_ms == 0) {
		fprintf(stderr, "ptb-paced-tx: RATE_PPS > 0, 60 <= LEN <= 1514, REPORT_MS > 0\n");
		return 2;
	}
	if (rte_eth_dev_count_avail() < 1) {
		fprintf(stderr, "ptb-paced-tx: no port (give one --vdev)\n");
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	struct rte_mempool *mp = rte_pktmbuf_pool_create("ptb_paced", 8191, 256, 0,
							 RTE_MBUF_DEFAULT_BUF_SIZE,
							 rte_socket_id());
	if (!mp)
		die("rte_pktmbuf_pool_create", rte_errno);
	uint16_t port = 0;
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof(conf));
	if ((ret = rte_eth_dev_configure(port, 1, 1, &conf)) < 0)
		die("rte_eth_dev_configure", ret);
	uint16_t nrx = RING, ntx = RING;
	if ((ret = rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx)) < 0)
		die("rte_eth_dev_adjust_nb_rx_tx_desc", ret);
	int sock = rte_eth_dev_socket_id(port);
	if ((ret = rte_eth_rx_queue_setup(port, 0, nrx, sock, NULL, mp)) < 0)
		die("rte_eth_rx_queue_setup", ret);
	if ((ret = rte_eth_tx_queue_setup(port, 0, ntx, sock, NULL)) < 0)
		die("rte_eth_tx_queue_setup", ret);
	if ((ret = rte_eth_dev_start(port)) < 0)
		die("rte_eth_dev_start", ret);

	uint8_t frame[1514];
	build_frame(frame, len);
	uint64_t chunk = rate / 1000;
	if (chunk < 1)
		chunk = 1;
	if (chunk > MAX_CHUNK)
		chunk = MAX_CHUNK;
	const uint64_t hz = rte_get_tsc_hz();
	const uint64_t spin_cycles = hz / 50000; /* 20 us */
	printf("ptb-paced-tx: port %u started, %" PRIu64 " pps, %u-byte frames, chunks of %" PRIu64
	       ", tsc %" PRIu64 " Hz\n", port, rate, len, chunk, hz);
	fflush(stdout);

	struct rte_mbuf *pkts[MAX_CHUNK];
	uint64_t offered = 0, sent = 0, dropped = 0;
	const uint64_t t0 = rte_rdtsc();
	uint64_t next_report = t0 + report_ms * hz / 1000, last_sent = 0, last_report = t0;
	while (!stop) {
		uint64_t now = rte_rdtsc();
		if (now >= next_report) {
			double dt = (double)(now - last_report) / (double)hz;
			double pps = (double)(sent - last_sent) / dt;
			printf("[%7.3fs] %.3f Mpps %.3f Gbps\n", (double)(now - t0) / (double)hz,
			       pps / 1e6, pps * len * 8 / 1e9);
			fflush(stdout);
			last_sent = sent;
			last_report = now;
			next_report += report_ms * hz / 1000;
		}
		/* Packets the schedule allows by now. */
		uint64_t allowed = (uint64_t)((unsigned __int128)(now - t0) * rate / hz) + 1;
		if (allowed <= offered) {
			uint64_t due = t0 + (uint64_t)((unsigned __int128)(offered + chunk) * hz / rate);
			if (due > now + spin_cycles) {
				uint64_t ns = (due - now - spin_cycles / 2) * 1000000000ull / hz;
				struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
						       .tv_nsec = (long)(ns % 1000000000ull) };
				nanosleep(&ts, NULL);
			} else {
				rte_pause();
			}
			continue;
		}
		uint64_t n = allowed - offered;
		if (n > chunk)
			n = chunk;
		if (rte_pktmbuf_alloc_bulk(mp, pkts, (unsigned)n) != 0) {
			/* Every mbuf in flight: let the ring drain. */
			rte_eth_tx_done_cleanup(port, 0, 0);
			rte_pause();
			continue;
		}
		for (uint64_t i = 0; i < n; i++) {
			struct rte_mbuf *m = pkts[i];
			rte_memcpy(rte_pktmbuf_mtod(m, void *), frame, len);
			m->data_len = (uint16_t)len;
			m->pkt_len = len;
		}
		uint64_t done = 0;
		unsigned idle = 0;
		while (done < n && idle < 64) {
			uint16_t want = (uint16_t)(n - done > TX_BURST ? TX_BURST : n - done);
			uint16_t k = rte_eth_tx_burst(port, 0, pkts + done, want);
			done += k;
			idle = k ? 0 : idle + 1;
		}
		if (done < n) {
			/* The ring stayed full: those frames are lost, as txonly loses them. */
			rte_pktmbuf_free_bulk(pkts + done, (unsigned)(n - done));
			dropped += n - done;
		}
		offered += n;
		sent += done;
	}
	double secs = (double)(rte_rdtsc() - t0) / (double)hz;
	printf("ptb-paced-tx: offered %" PRIu64 " sent %" PRIu64 " dropped %" PRIu64
	       " in %.3f s: %.3f Mpps\n", offered, sent, dropped, secs, (double)sent / secs / 1e6);
	fflush(stdout);
	rte_eth_dev_stop(port);
	rte_eth_dev_close(port);
	rte_eal_cleanup();
	return 0;
}
