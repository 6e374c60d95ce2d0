/*
 * backward.h -- the backward pass as two steps, for the tape (tape.c) to reuse with an order of
 * its own: the depth-first search that gives the seed's topological order, and the chain rule
 * over a given order. Include after "arena.h".
 */
#ifndef MG_BACKWARD_H
#define MG_BACKWARD_H

// The seed's topological order of the graph below root (index, validated): the nodes with
// children, in post-order, into a->order. Returns their number, or MG_ERR_NOMEM.
int64_t mgi_search_order(mg_arena *a, int64_t root);

// What a fused graph cannot do (a second backward, or one after its values changed): the
// MG_ERR_* code, or 0. Checked before a search, which can run out of memory, and by the chain rule.
int mgi_backward_refused(const mg_arena *a);

// The chain rule from root (index, validated) over order[0..n-1], a topological order of the
// nodes with children below root, taken in reverse. Refuses what a fused graph cannot do
// (mgi_backward_refused) before changing anything.
int mgi_chain_rule(mg_arena *a, int64_t root, const mgi_id *order, int64_t n);

#endif
