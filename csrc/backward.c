/*
 * backward.c -- the seed's backward: a topological order by depth-first search, then the chain
 * rule in reverse order, grad[child] += local_grad * grad[node]. The order decides in which
 * order each gradient's terms are added, and so their rounding: it is the seed's build_topo,
 * node for node (shared/PARITY.md).
 *
 * Not here: where an order comes from other than the search (tape.c caches one per recorded
 * step and passes it to mgi_chain_rule), Adam (adam.c).
 */
#include <stdint.h>
#include <string.h>
#include "microgpt.h"
#include "arena.h"
#include "backward.h"
#include "dot.h"

// A DOT node over two runs (nd_dot_of's ranges) whose weights are all leaves: its x run, x0 ..
// x0+n-1. Its children alternate w_j, x_j; the leaves among them are never appended and their
// marks decide nothing (a leaf reached again is skipped either way), so the search may visit the
// x_j alone.
static inline int leaf_weighted_dot(const mg_arena *a, int64_t v, int64_t *x0, int64_t *n) {
    if (a->op[v] != MG_OP_DOT) return 0;
    int64_t b = a->edge_begin[v];
    if (a->edge_lgrad[b] == 0.0 || mgi_vec_entry(a, a->edge_child[b]) + mgi_dot_n(a, b) > a->leaves_below) return 0;
    *x0 = mgi_vec_entry(a, a->edge_child[b + 1]), *n = mgi_dot_n(a, b);
    return 1;
}

// The seed's build_topo, without recursion: depth-first from the root, children in stored order,
// a node marked when first reached, appended after all its children (post-order). Leaves are
// marked but not appended: they have no edges, so where they sit in the order changes nothing.
// A linear layer's rows share their input run: once one row is appended, every node of that run
// is marked, so a later row over it (leaf_weighted_dot) is appended at once, as its visit of
// 2n marked or leaf children would have ended.
int64_t mgi_search_order(mg_arena *a, int64_t root) {
    int rc = mgi_reserve_search(a, root + 1);    // everything reachable has an index <= root
    if (rc) return rc;
    const uint8_t *op = a->op;
    if (op[root] == MG_OP_LEAF) return 0;
    if (++a->search_stamp == 0) {                // the stamp wrapped: every old stamp must go
        a->search_stamp = 1;
        a->seen_clean = 0;
    }
    // marks of nodes below leaves_below (all leaves, never appended) are neither read nor written
    const int64_t below = a->leaves_below;
    int64_t clean = a->seen_clean > below ? a->seen_clean : below;
    if (root + 1 > clean) memset(a->seen + clean, 0, (size_t)(root + 1 - clean) * sizeof *a->seen);
    if (root + 1 > a->seen_clean) a->seen_clean = root + 1;
    const uint32_t stamp = a->search_stamp;
    uint32_t *seen = a->seen;
    int64_t *stack_node = a->stack_node, *stack_child = a->stack_edge;
    mgi_id *order = a->order;
    int64_t sp = 0, n = 0;
    int64_t done_x0 = 0, done_n = 0;             // an x run all marked: a leaf-weighted DOT's, appended
    seen[root] = stamp;
    // v is the node being expanded, p its next child (every step-th); its ancestors wait on the stack
    int64_t v = root, p = 0, step = 1, end = mgi_child_count(a, root), x0, nx;
    if (leaf_weighted_dot(a, v, &x0, &nx)) p = 1, step = 2;
    for (;;) {
        if (p < end) {
            int64_t k = mgi_child(a, v, p);
            p += step;
            if (k < below) continue;             // a leaf: done at once
            if (seen[k] == stamp) continue;
            seen[k] = stamp;
            if (op[k] == MG_OP_LEAF) continue;   // a leaf is done at once
            if (leaf_weighted_dot(a, k, &x0, &nx)) {
                if (x0 >= done_x0 && x0 + nx <= done_x0 + done_n) {
                    order[n++] = (mgi_id)k;      // every child marked already
                    continue;
                }
            }
            stack_node[sp] = v;                  // descend into k; resume v at child p
            stack_child[sp] = p;
            sp++;
            v = k, p = 0, step = 1, end = mgi_child_count(a, k);
            if (leaf_weighted_dot(a, v, &x0, &nx)) p = 1, step = 2;
        } else {                                 // all of v's children are done
            order[n++] = (mgi_id)v;
            if (leaf_weighted_dot(a, v, &x0, &nx)) done_x0 = x0, done_n = nx;
            if (sp == 0) break;
            sp--;
            v = stack_node[sp], p = stack_child[sp], end = mgi_child_count(a, v);
            step = leaf_weighted_dot(a, v, &x0, &nx) ? 2 : 1;
        }
    }
    return n;
}

int mgi_backward_refused(const mg_arena *a) {
    if (a->dot_changed) return MG_ERR_CHANGED;
    // a second backward over fused nodes: the seed's chain would have kept the first one's
    // gradients in its sum and product nodes, which a DOT node does not have
    if (a->step_dots && a->differentiated) return MG_ERR_TWICE;
    return 0;
}

// the two terms of a DOT node's pair (w, x): each one's local gradient is the other's value
static inline void dot_term(double *grad, const double *data, int64_t w, int64_t x, double gn) {
    grad[w] += data[x] * gn;
    grad[x] += data[w] * gn;
}

int mgi_chain_rule(mg_arena *a, int64_t root, const mgi_id *order, int64_t n) {
    int rc = mgi_backward_refused(a);
    if (rc) return rc;
    a->differentiated = 1;
    const uint32_t *eb = a->edge_begin;
    const mgi_id *child = a->edge_child;
    const double *lgrad = a->edge_lgrad, *data = a->data;
    const uint8_t *op = a->op;
    double *grad = a->grad;
    const int simd = MGI_HAVE_AVX2();
    grad[root] = 1.0;
    for (int64_t k = n - 1; k >= 0; k--) {
        int64_t v = order[k], b = eb[v], end = eb[v + 1];
        double g = grad[v];
        if (op[v] == MG_OP_DOT) {
            // a fused sum(w_j * x_j): each product node of the unfused chain would have had the
            // gradient 0.0 + g, and the chain hands them out from the last pair to the first;
            // each child's local gradient is its partner's value (unchanged: dot_changed)
            double gn = 0.0 + g;
            int64_t wo = child[b], xo = child[b + 1];
            if (lgrad[b] != 0.0) {               // two runs of nodes (arena.h, nd_dot_of), apart: each
                                                 // node gets its one term, in any order of the j (dot.h)
                int64_t w0 = mgi_vec_entry(a, wo), x0 = mgi_vec_entry(a, xo);
                MGI_DOT_TERMS(simd, grad + w0, grad + x0, data + w0, data + x0, (int64_t)lgrad[b + 1], gn);
                continue;
            }
            int64_t nj = (int64_t)lgrad[b + 1];   // (mgi_dot_n)
            if (wo >= a->vecs_keep && xo >= a->vecs_keep) {   // a step's vecs: their entries in place
                const mgi_id *wv = mgi_step_ids(a, wo), *xv = mgi_step_ids(a, xo);
                for (int64_t j = nj - 1; j >= 0; j--) dot_term(grad, data, wv[j], xv[j], gn);
            } else {                             // a kept vec's entries come from its runs
                for (int64_t j = nj - 1; j >= 0; j--)
                    dot_term(grad, data, mgi_vec_entry(a, wo + j), mgi_vec_entry(a, xo + j), gn);
            }
        } else {
            for (int64_t e = b; e < end; e++) grad[child[e]] += lgrad[e] * g;
        }
    }
    return 0;
}

int mg_backward(mg_arena *a, int64_t root) {
    mgi_count_call(a);
    int64_t r = 0;
    int rc = mgi_node_check(a, root, &r);
    if (rc) return rc;
    mgi_note_change(a);
    if ((rc = mgi_backward_refused(a))) return rc;   // before the search can run out of memory
    int64_t n = mgi_search_order(a, r);
    if (n < 0) return (int)n;
    return mgi_chain_rule(a, r, a->order, n);
}
