/*
 * The measurement behind docs/fib.md, "Where an IPv4 packet's time goes":
 * does a tbl24 split into small inner arrays (kmalloc'ed, so in the kernel's
 * direct map, 1 GB pages on this VM) behind an ARRAY_OF_MAPS cost less per
 * lookup than one 64 MB array (vmalloc'ed in 4 KB pages)?
 *
 * Build and run (root):
 *   clang-16 -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu \
 *     -DINNER_BLOCKS=31 -c gate.bpf.c -o gate31.bpf.o
 *   gcc -O2 -o gate gate.c -lbpf
 *   ./gate gate31.bpf.o 31 ROUNDS [FRAMES [SPAN]]
 * FRAMES distinct headers (default 65536), destinations and sources random
 * in the first SPAN /16s (default 65536: the whole table, 64 MB). Prints
 * ns per run of each program (XDP_PASS, the big array, the inner arrays,
 * the inner arrays with the records split too, the DXR emulation) behind the xdp_cycle-like driver, per round
 * (rounds alternate the order), and how many small array_map_alloc vmalloc
 * areas appeared (0: every inner array was kmalloc'ed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>

static int vmalloc_bpf(void) {
	FILE *f = fopen("/proc/vmallocinfo", "r"); char line[512]; int n = 0;
	while (fgets(line, sizeof line, f)) if (strstr(line, "array_map_alloc")) { unsigned long a,b,sz; if (sscanf(line, "0x%lx-0x%lx %lu", &a, &b, &sz) == 3 && sz <= 40960) n++; }
	fclose(f); return n;
}
static unsigned rnd(void) { return ((unsigned)random() << 16) ^ (unsigned)random(); }

int main(int argc, char **argv)
{
	const char *path = argv[1]; int inner_blocks = atoi(argv[2]); int rounds = argc > 3 ? atoi(argv[3]) : 6;
	int nres = 6613; int nfr = argc > 4 ? atoi(argv[4]) : 65536; unsigned span = argc > 5 ? atoi(argv[5]) : 65536;
	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj || bpf_object__load(obj)) { fprintf(stderr, "load failed\n"); return 1; }
	int big24 = bpf_object__find_map_fd_by_name(obj, "big24"), bigres = bpf_object__find_map_fd_by_name(obj, "bigres");
	int mom24 = bpf_object__find_map_fd_by_name(obj, "mom24"), momres = bpf_object__find_map_fd_by_name(obj, "momres");
	int frames = bpf_object__find_map_fd_by_name(obj, "frames"), target = bpf_object__find_map_fd_by_name(obj, "target");
	unsigned *t24 = mmap(NULL, 65536 * 1024, PROT_READ | PROT_WRITE, MAP_SHARED, big24, 0);
	unsigned *tres = mmap(NULL, 65536 * 16, PROT_READ | PROT_WRITE, MAP_SHARED, bigres, 0);
	if (t24 == MAP_FAILED || tres == MAP_FAILED) { perror("mmap"); return 1; }
	srandom(42);
	for (long i = 0; i < 65536L * 256; i++) t24[i] = rnd() % nres;
	for (int i = 0; i < 65536; i++) { tres[i*4] = i; tres[i*4+1] = i * 7; tres[i*4+2] = 1; }
	int v0 = vmalloc_bpf();
	int nout = (65536 + inner_blocks - 1) / inner_blocks;
	for (int o = 0; o < nout; o++) {
		int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, 1024, inner_blocks, NULL);
		if (fd < 0) { perror("inner"); return 1; }
		for (int k = 0; k < inner_blocks; k++) { unsigned b = o * inner_blocks + k; if (b >= 65536) break;
			if (bpf_map_update_elem(fd, &k, &t24[b * 256], 0)) { perror("upd"); return 1; } }
		if (bpf_map_update_elem(mom24, &o, &fd, 0)) { perror("outer"); return 1; }
		close(fd);
	}
	int v1 = vmalloc_bpf();
	for (int o = 0; o < (65536 + 1983) / 1984; o++) {
		int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, 16, 1984, NULL);
		if (fd < 0) { perror("inner res"); return 1; }
		for (int k = 0; k < 1984; k++) { unsigned r = o * 1984 + k; if (r >= 65536) break;
			bpf_map_update_elem(fd, &k, &tres[r*4], 0); }
		bpf_map_update_elem(momres, &o, &fd, 0); close(fd);
	}
	int v2 = vmalloc_bpf();
	printf("vmalloc bpf areas: before inner %d, after tbl24 inners %d (%d maps), after res inners %d\n", v0, v1, nout, v2);
	{
		int dd = bpf_object__find_map_fd_by_name(obj, "dxr_direct"), dr = bpf_object__find_map_fd_by_name(obj, "dxr_ranges");
		static unsigned dir[65536], rng[8192 * 256]; unsigned pos = 0; long total = 0;
		for (unsigned c = 0; c < 65536; c++) {
			unsigned n = 16 + rnd() % 27;
			if ((pos & 255) + n > 256) pos = (pos | 255) + 1;
			unsigned st[64]; st[0] = 0;
			for (unsigned k = 1; k < n; k++) st[k] = rnd() & 0xffff;
			for (unsigned k = 1; k < n; k++) for (unsigned m = k + 1; m < n; m++) if (st[m] < st[k]) { unsigned t = st[k]; st[k] = st[m]; st[m] = t; }
			for (unsigned k = 0; k < n; k++) rng[pos + k] = st[k] << 16 | (rnd() % nres);
			dir[c] = pos | n << 24; pos += n; total += n;
		}
		for (unsigned b = 0; b < 256; b++) bpf_map_update_elem(dd, &b, &dir[b * 256], 0);
		for (unsigned b = 0; b <= pos / 256 && b < 8192; b++) bpf_map_update_elem(dr, &b, &rng[b * 256], 0);
		printf("dxr: %ld ranges, %u blocks of 1 KB (%.1f MB)\n", total, pos / 256 + 1, (pos / 256 + 1) / 1024.0);
	}
	unsigned char hdr[64];
	for (unsigned i = 0; i < 65536; i++) {
		if (i >= nfr) { unsigned j = i % nfr; bpf_map_lookup_elem(frames, &j, hdr); bpf_map_update_elem(frames, &i, hdr, 0); continue; }
		memset(hdr, 0, 64); hdr[12] = 8; hdr[14] = 0x45;
		unsigned s = rnd(), d = rnd(); s = __builtin_bswap32((__builtin_bswap32(s) & 0xffff) | ((rnd() % span) << 16)); d = __builtin_bswap32((__builtin_bswap32(d) & 0xffff) | ((rnd() % span) << 16));
		memcpy(hdr + 26, &s, 4); memcpy(hdr + 30, &d, 4);
		bpf_map_update_elem(frames, &i, hdr, 0);
	}
	const char *names[] = { "pass", "loads_big", "loads_mom", "loads_mom2", "loads_dxr" };
	int nt = 5; double sum[5][64]; int cycle = bpf_program__fd(bpf_object__find_program_by_name(obj, "cycle"));
	unsigned char pkt[64] = {0}, out[512];
	for (int r = 0; r < rounds; r++) for (int j = 0; j < nt; j++) {
		int t = (r & 1) ? nt - 1 - j : j; int z = 0;
		int pfd = bpf_program__fd(bpf_object__find_program_by_name(obj, names[t]));
		bpf_map_update_elem(target, &z, &pfd, 0);
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pkt, .data_size_in = 64, .data_out = out, .data_size_out = sizeof out, .repeat = 1 << 20);
		if (bpf_prog_test_run_opts(cycle, &o)) { perror("run"); return 1; }
		sum[t][r] = o.duration;
	}
	for (int t = 0; t < nt; t++) { printf("%-11s", names[t]); for (int r = 0; r < rounds; r++) printf(" %5.0f", sum[t][r]); printf("\n"); }
	return 0;
}
