// Graphviz export of an autograd graph through Boost.Graph.
// GCC 12 reports a false -Wmaybe-uninitialized inside Boost.Graph's edge iterators.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <boost/graph/adjacency_list.hpp>
#include <boost/graph/graphviz.hpp>
#include <sstream>
#include <unordered_map>

#include "autograd/engine.h"

namespace tg::autograd {

namespace {
struct VertexProps {
  std::string label;
  std::string shape;
  std::string color;
};
using Graph = boost::adjacency_list<boost::vecS, boost::vecS, boost::directedS, VertexProps>;

std::string meta_str(const TensorMeta& m) {
  std::ostringstream os;
  os << m.shape << " " << m.dtype;
  if (!m.device.is_cpu()) os << " " << m.device;
  return os.str();
}
}  // namespace

std::string to_dot(const Tensor& root) {
  if (!root.defined()) TG_THROW(ValueError, "to_dot: root is an undefined tensor");
  Graph g;
  std::unordered_map<const void*, Graph::vertex_descriptor> ids;

  auto leaf_vertex = [&](const std::shared_ptr<TensorImpl>& leaf) {
    auto it = ids.find(leaf.get());
    if (it != ids.end()) return it->second;
    std::ostringstream os;
    os << (leaf->name.empty() ? "leaf" : leaf->name) << "\\n" << leaf->shape << " " << leaf->dtype;
    auto v = boost::add_vertex(VertexProps{os.str(), "box", "lightblue"}, g);
    ids[leaf.get()] = v;
    return v;
  };

  auto out = boost::add_vertex(VertexProps{"output\\n" + root.shape().str(), "ellipse", "palegreen"}, g);
  if (!root.grad_fn()) {
    boost::add_edge(leaf_vertex(root.impl_ptr()), out, g);
  } else {
    std::vector<std::shared_ptr<Node>> stack{root.grad_fn()};
    auto node_vertex = [&](const std::shared_ptr<Node>& n) {
      auto it = ids.find(n.get());
      if (it != ids.end()) return it->second;
      std::string label = n->name();
      if (!n->outputs().empty()) label += "\\n" + meta_str(n->outputs()[0]);
      auto v = boost::add_vertex(VertexProps{label, "ellipse", "white"}, g);
      ids[n.get()] = v;
      stack.push_back(n);
      return v;
    };
    stack.clear();
    boost::add_edge(node_vertex(root.grad_fn()), out, g);
    while (!stack.empty()) {
      auto n = stack.back();
      stack.pop_back();
      auto v = ids.at(n.get());
      for (const auto& e : n->next_edges()) {
        if (e.leaf) boost::add_edge(leaf_vertex(e.leaf), v, g);
        else if (e.fn) boost::add_edge(node_vertex(e.fn), v, g);
      }
    }
  }

  std::ostringstream os;
  boost::write_graphviz(
      os, g,
      [&](std::ostream& o, Graph::vertex_descriptor v) {
        o << "[label=\"" << g[v].label << "\", shape=" << g[v].shape << ", style=filled, fillcolor=" << g[v].color
          << "]";
      },
      boost::default_writer(), [](std::ostream& o) { o << "rankdir=BT;\n"; });
  return os.str();
}

}  // namespace tg::autograd
