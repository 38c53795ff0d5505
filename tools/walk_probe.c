/* Explicit VR little endian walk of a top-level dataset to the pixel data; records wanted elements.
   Returns the pixel element header offset, or -1 (unprovable). A measurement probe (tools/walk_probe.py), not kvdicom code. */
#include <stdint.h>
#include <string.h>
static int is_long(const unsigned char *vr) {
    static const char *L[] = {"OB","OD","OF","OL","OV","OW","SQ","SV","UC","UN","UR","UT","UV"};
    for (int i = 0; i < 13; i++) if (vr[0] == L[i][0] && vr[1] == L[i][1]) return 1;
    return 0;
}
static uint32_t u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint16_t u16(const unsigned char *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static long walk_items(const unsigned char *b, long n, long pos, int depth);
/* a dataset inside an item of undefined length: until an item delimiter */
static long walk_set(const unsigned char *b, long n, long pos, long end, int depth) {
    while (pos + 8 <= n && (end < 0 || pos < end)) {
        uint32_t tag = u32(b + pos);
        if (tag == 0xE00DFFFEu) return pos + 8;  /* item delimiter */
        const unsigned char *vr = b + pos + 4;
        uint32_t len; long at;
        if (is_long(vr)) { if (pos + 12 > n) return -1; len = u32(b + pos + 8); at = pos + 12; }
        else { len = u16(b + pos + 6); at = pos + 8; }
        if (len == 0xFFFFFFFFu) { if (vr[0] != 'S' || vr[1] != 'Q') return -1; pos = walk_items(b, n, at, depth + 1); if (pos < 0) return -1; }
        else pos = at + len;
    }
    return end < 0 ? -1 : pos;
}
static long walk_items(const unsigned char *b, long n, long pos, int depth) {
    if (depth > 16) return -1;
    while (pos + 8 <= n) {
        uint32_t tag = u32(b + pos), len = u32(b + pos + 4);
        if (tag == 0xE0DDFFFEu) return pos + 8;   /* sequence delimiter */
        if (tag != 0xE000FFFEu) return -1;
        if (len == 0xFFFFFFFFu) { pos = walk_set(b, n, pos + 8, -1, depth); if (pos < 0) return -1; }
        else pos = pos + 8 + len;
    }
    return -1;
}
/* wanted: sorted-free list of tag words; out: (value offset, length) per wanted tag, -1 if absent */
long walk_top(const unsigned char *b, long n, long pos, const uint32_t *wanted, int nwanted, int64_t *out) {
    for (int i = 0; i < 2 * nwanted; i++) out[i] = -1;
    while (pos + 12 <= n) {
        uint32_t tag = u32(b + pos);
        const unsigned char *vr = b + pos + 4;
        uint32_t len; long at;
        if (is_long(vr)) { len = u32(b + pos + 8); at = pos + 12; }
        else { len = u16(b + pos + 6); at = pos + 8; }
        if (tag == 0x00107FE0u) return pos;       /* (7FE0,0010) pixel data */
        for (int i = 0; i < nwanted; i++) if (wanted[i] == tag) { out[2*i] = at; out[2*i+1] = len; break; }
        if (len == 0xFFFFFFFFu) { if (vr[0] != 'S' || vr[1] != 'Q') return -1; pos = walk_items(b, n, at, 1); if (pos < 0) return -1; }
        else pos = at + len;
    }
    return -1;
}
