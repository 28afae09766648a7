// Compiled pieces of the MARS training step on the CPU (see tnmars/nn/native.py).
//
// Each function does what a few lines of tnmars.nn.masks / tnmars.nn.optimizers do in Python,
// with the same arithmetic (float64, the same libm calls), so that both paths give the same
// draws and gradients; a tensor it cannot read directly (not a plain contiguous CPU float
// tensor: a functorch wrapper, a subclass, another device) is left to the Python path.
#include <torch/extension.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/DistributionsHelper.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

#include <cmath>
#include <mutex>
#include <vector>

namespace {

bool plain_cpu(const at::Tensor& t) {
  if (!t.defined() || !t.device().is_cpu() || t.layout() != at::kStrided || !t.is_contiguous()) return false;
  if (t.scalar_type() != at::kFloat && t.scalar_type() != at::kDouble) return false;
  const c10::DispatchKeySet wrapped({c10::DispatchKey::FuncTorchBatched, c10::DispatchKey::FuncTorchGradWrapper,
                                     c10::DispatchKey::Python, c10::DispatchKey::Functionalize,
                                     c10::DispatchKey::Conjugate, c10::DispatchKey::Negative});
  return t.key_set().has(c10::DispatchKey::CPU) && !t.key_set().has_any(wrapped);
}

template <typename T>
void push_one(at::Tensor& logits, double h) {
  const int64_t n = logits.numel();
  const T* l = logits.data_ptr<T>();
  at::Tensor& grad = logits.mutable_grad();
  const bool fresh = !grad.defined();
  at::Tensor out = fresh ? at::empty_like(logits, at::MemoryFormat::Contiguous) : grad;
  T* g = out.data_ptr<T>();
  // as the Python path: h / (1 + cosh(l)), or for the whole vector, where cosh overflows on an
  // entry (|l| > 710), e^-|l| / (1 + e^-|l|)^2 without overflow
  bool overflow = false;
  for (int64_t i = 0; i < n && !overflow; ++i) {
    const double v = static_cast<double>(l[i]);
    overflow = std::isfinite(v) && std::fabs(v) > 710.0 && std::isinf(std::cosh(v));
  }
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(l[i]);
    double p;
    if (!overflow) {
      p = h / (1.0 + std::cosh(v));  // s (1 - s) = 1 / (2 + 2 cosh(l)), h holding the 1/2
    } else {
      const double e = std::exp(-std::fabs(v));
      p = 2.0 * h * e / ((1.0 + e) * (1.0 + e));
    }
    g[i] = fresh ? static_cast<T>(p) : static_cast<T>(g[i] + static_cast<T>(p));
  }
  if (fresh) {
    grad = out;
  } else {
    out.unsafeGetTensorImpl()->bump_version();  // as g.add_(p) would
  }
}

// Whether the uniforms may be drawn straight from the default CPU generator: not under a
// functorch transform (vmap draws per its randomness setting) nor a dispatch or torch-function
// mode (which would see torch.rand_like in the Python path).
bool direct_draw_allowed() {
  return !c10::impl::tls_is_dispatch_key_included(c10::DispatchKey::FuncTorchDynamicLayerFrontMode)
         && !c10::impl::TorchDispatchModeTLS::any_modes_set()
         && !at::impl::torch_function_mode_enabled();
}

// The numbers torch.rand_like gives a contiguous CPU vector: ATen's CPU uniform kernel draws one
// at::uniform_real_distribution<scalar_t> sample per element in order, under the generator's
// lock, and maps a value rounded up to 1 to 0. Drawn here without building a tensor or going
// through the dispatcher; tests/test_nn_native.py checks the numbers against torch.rand_like.
template <typename T>
T draw_into(T* out, int64_t n) {
  auto* gen = at::get_generator_or_default<at::CPUGeneratorImpl>(std::nullopt, at::detail::getDefaultCPUGenerator());
  std::lock_guard<std::mutex> lock(gen->mutex_);
  at::uniform_real_distribution<T> uniform(static_cast<T>(0.0), static_cast<T>(1.0));
  T smallest = static_cast<T>(1.0);
  for (int64_t i = 0; i < n; ++i) {
    T value = static_cast<T>(uniform(gen));
    value = value == static_cast<T>(1.0) ? static_cast<T>(0.0) : value;
    out[i] = value;
    if (value < smallest) smallest = value;
  }
  return smallest;
}

// True only where the Python test is True too: a "not all ones" sends the draw to the Python
// path, which tests it again (a NaN logit, which Python's min() may skip, always does)
template <typename T>
bool reaches_one(const T* logits, int64_t n, T smallest_uniform, double one, double eps) {
  T lmin = logits[0];
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) return false;
    if (logits[i] < lmin) lmin = logits[i];
  }
  double v = static_cast<double>(smallest_uniform);
  double l = static_cast<double>(lmin);
  v = v < eps ? eps : (v > 1.0 - eps ? 1.0 - eps : v);
  return l + std::log(v / (1.0 - v)) >= one;
}

template <typename T>
py::object draw_direct(const at::Tensor& logits, double one, double eps) {
  const int64_t n = logits.numel();
  std::vector<T> uniforms(static_cast<size_t>(n));
  const T smallest = draw_into(uniforms.data(), n);
  if (reaches_one(logits.data_ptr<T>(), n, smallest, one, eps)) return py::none();
  at::Tensor u = at::empty_like(logits, at::MemoryFormat::Contiguous);
  std::copy(uniforms.begin(), uniforms.end(), u.data_ptr<T>());
  return py::cast(u);
}

}  // namespace

// The draw of torch.rand_like(logits), then None when every entry of that hard-concrete draw is
// exactly 1 (the test of tnmars.nn.masks._all_ones), else the uniforms, for the Python path to
// classify. NotImplemented, having drawn nothing, where the Python path must draw itself.
py::object draw_open(const at::Tensor& logits, double one, double eps) {
  if (logits.numel() == 0 || !plain_cpu(logits) || !direct_draw_allowed())
    return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  if (logits.scalar_type() == at::kFloat) return draw_direct<float>(logits, one, eps);
  return draw_direct<double>(logits, one, eps);
}

// torch.rand_like(logits) drawn as draw_open draws it (a test's handle on the direct draw), or
// NotImplemented
py::object draw_uniforms(const at::Tensor& logits) {
  if (logits.numel() == 0 || !plain_cpu(logits) || !direct_draw_allowed())
    return py::reinterpret_borrow<py::object>(Py_NotImplemented);
  at::Tensor u = at::empty_like(logits, at::MemoryFormat::Contiguous);
  if (logits.scalar_type() == at::kFloat) draw_into(u.data_ptr<float>(), u.numel());
  else draw_into(u.data_ptr<double>(), u.numel());
  return py::cast(u);
}

// The logits' prior push of PriorGradient._push_on_host: grad += h / (1 + cosh(l)) per vector
// (grad set to it where there is none). False, having changed nothing, unless every vector and
// every gradient present is a plain contiguous 1-D CPU float tensor of one dtype and shape.
bool push(std::vector<at::Tensor> logits, const std::vector<double>& scales) {
  if (logits.size() != scales.size()) return false;
  for (const auto& lg : logits) {
    if (!plain_cpu(lg) || lg.dim() != 1) return false;
    const at::Tensor& g = lg.grad();
    if (g.defined() && (!plain_cpu(g) || g.scalar_type() != lg.scalar_type() || g.sizes() != lg.sizes()
                        || g.is_same(lg)))
      return false;
  }
  for (size_t k = 0; k < logits.size(); ++k) {
    if (logits[k].scalar_type() == at::kFloat) {
      push_one<float>(logits[k], scales[k]);
    } else {
      push_one<double>(logits[k], scales[k]);
    }
  }
  return true;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("draw_open", &draw_open, "a mask draw's uniforms, or None when the draw is all ones");
  m.def("draw_uniforms", &draw_uniforms, "torch.rand_like(logits), as draw_open draws it");
  m.def("push", &push, "the mask logits' prior gradient added to their .grad");
}
