//! Cycle detection over the step dependency graph.

use std::collections::VecDeque;

/// Every cycle of the graph, one per strongly connected component that has one.
///
/// `deps[i]` lists the steps that step `i` depends on. Each cycle is returned as the steps in
/// dependency order (each depends on the next, the last on the first), starting at the lowest
/// index of its component, and the cycles are ordered by that index. Within a component the
/// shortest cycle through its lowest index is named, so the output is deterministic.
pub(super) fn cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut found: Vec<Vec<usize>> = strongly_connected(deps)
        .into_iter()
        .filter(|scc| scc.len() > 1 || scc.first().is_some_and(|&v| deps[v].contains(&v)))
        .filter_map(|scc| shortest_cycle(deps, &scc))
        .collect();
    found.sort_by_key(|cycle| cycle[0]);
    found
}

/// Tarjan's algorithm, iterative so that a long chain of steps cannot overflow the stack.
/// Edges to indexes out of range are ignored.
fn strongly_connected(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNVISITED: usize = usize::MAX;
    let n = deps.len();
    let mut index = vec![UNVISITED; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut next_index = 0;
    let mut components = Vec::new();
    // (vertex, position of the next edge to look at)
    let mut work: Vec<(usize, usize)> = Vec::new();

    for start in 0..n {
        if index[start] != UNVISITED {
            continue;
        }
        work.push((start, 0));
        while let Some(&mut (v, ref mut edge)) = work.last_mut() {
            if *edge == 0 && index[v] == UNVISITED {
                index[v] = next_index;
                low[v] = next_index;
                next_index += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = deps[v].get(*edge) {
                *edge += 1;
                if w >= n {
                    continue;
                }
                if index[w] == UNVISITED {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components
}

/// The shortest cycle through the lowest vertex of `scc`, staying inside `scc` (breadth-first,
/// edges in listed order, so ties go the same way every time).
fn shortest_cycle(deps: &[Vec<usize>], scc: &[usize]) -> Option<Vec<usize>> {
    let &start = scc.first()?;
    let inside = |v: usize| scc.binary_search(&v).is_ok();
    // Sized by the component, not the graph: many small cycles stay linear in all.
    let mut parent: std::collections::HashMap<usize, usize> =
        std::collections::HashMap::with_capacity(scc.len());
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &deps[v] {
            if w == start {
                // Walk back from v to start, then put the cycle in dependency order.
                let mut cycle = vec![v];
                let mut at = v;
                while at != start {
                    at = *parent.get(&at)?;
                    cycle.push(at);
                }
                cycle.reverse();
                return Some(cycle);
            }
            if w < deps.len() && inside(w) && w != start && !parent.contains_key(&w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acyclic_graph_has_no_cycles() {
        // 0 <- 1 <- 2, 0 <- 2, 3 alone
        assert!(cycles(&[vec![], vec![0], vec![0, 1], vec![]]).is_empty());
    }

    #[test]
    fn self_loop_is_a_cycle() {
        assert_eq!(cycles(&[vec![], vec![1]]), vec![vec![1]]);
    }

    #[test]
    fn names_cycle_in_dependency_order_from_lowest_index() {
        // 0 depends on 2, 2 on 1, 1 on 0: cycle 0 -> 2 -> 1 -> 0.
        assert_eq!(cycles(&[vec![2], vec![0], vec![1]]), vec![vec![0, 2, 1]]);
    }

    #[test]
    fn one_cycle_per_component_ordered() {
        // Component {1, 2} and component {3, 4, 5}; 0 hangs off both.
        let deps = vec![vec![1, 3], vec![2], vec![1], vec![5], vec![3], vec![4]];
        assert_eq!(cycles(&deps), vec![vec![1, 2], vec![3, 5, 4]]);
    }

    #[test]
    fn picks_shortest_cycle_through_lowest_vertex() {
        // 0 -> 1 -> 2 -> 0 and 0 -> 2 -> 0: the short one is named.
        let deps = vec![vec![1, 2], vec![2], vec![0]];
        assert_eq!(cycles(&deps), vec![vec![0, 2]]);
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let n = 200_000;
        let mut deps: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        assert!(cycles(&deps).is_empty());
        deps[0].push(n - 1);
        let found = cycles(&deps);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].len(), n);
        assert_eq!(found[0][..3], [0, n - 1, n - 2]);
    }

    #[test]
    fn ignores_out_of_range_edges() {
        assert!(cycles(&[vec![7]]).is_empty());
    }
}
