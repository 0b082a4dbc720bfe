#include "daemon/server/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace sublease {
namespace {

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "metrics: %s\n", message.c_str());
  std::abort();
}

bool ValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char ch = name[i];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
              (allow_colon && ch == ':') || (i > 0 && ch >= '0' && ch <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char ch : help) {
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

// {a="1",b="2"} plus an optional trailing le label; "" when there are no labels.
std::string FormatLabels(const Labels& labels, const std::string* le = nullptr) {
  if (labels.empty() && le == nullptr) return "";
  std::string out = "{";
  for (const auto& [name, value] : labels) {
    if (out.size() > 1) out += ',';
    out += name + "=\"" + EscapeLabelValue(value) + "\"";
  }
  if (le != nullptr) {
    if (out.size() > 1) out += ',';
    out += "le=\"" + *le + "\"";
  }
  return out + "}";
}

}  // namespace

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  std::to_chars_result r{};
  // Plain decimals read best in a scrape; exponents only for the very large or small.
  if (v == 0 || (std::fabs(v) >= 1e-6 && std::fabs(v) < 1e15)) {
    r = std::to_chars(buf, buf + sizeof(buf), v, std::chars_format::fixed);
  } else {
    r = std::to_chars(buf, buf + sizeof(buf), v);
  }
  return std::string(buf, r.ptr);
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\') {
      out += "\\\\";
    } else if (ch == '"') {
      out += "\\\"";
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

void Counter::Inc(double v) {
  if (v >= 0) value_ += v;
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::Observe(double v) {
  // Bucket i holds observations <= bounds_[i] and > bounds_[i-1] (le is inclusive).
  size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  ++counts_[i];
  sum_ += v;
  ++count_;
}

std::vector<double> DefaultSecondsBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

MetricsRegistry::Family& MetricsRegistry::FamilyFor(std::string_view name, std::string_view help,
                                                    Type type, const Labels& labels) {
  if (!ValidName(name, true)) Die("invalid metric name \"" + std::string(name) + "\"");
  for (const auto& [label, value] : labels) {
    if (!ValidName(label, false) || label.starts_with("__") || label == "le") {
      Die("invalid label name \"" + label + "\" on " + std::string(name));
    }
  }
  auto it = families_.find(name);
  if (it == families_.end()) {
    it = families_.emplace(std::string(name), Family{type, std::string(help), {}, {}, {}, {}, {}})
             .first;
  }
  if (it->second.type != type) Die("metric " + std::string(name) + " registered with two types");
  return it->second;
}

Counter& MetricsRegistry::GetCounter(std::string_view name, std::string_view help,
                                     const Labels& labels) {
  auto& slot = FamilyFor(name, help, Type::kCounter, labels).counters[labels];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& MetricsRegistry::GetGauge(std::string_view name, std::string_view help,
                                 const Labels& labels) {
  Family& f = FamilyFor(name, help, Type::kGauge, labels);
  if (f.read) Die("gauge " + std::string(name) + " is read from a callback");
  auto& slot = f.gauges[labels];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& MetricsRegistry::GetHistogram(std::string_view name, std::string_view help,
                                         const Labels& labels, std::vector<double> bounds) {
  Family& f = FamilyFor(name, help, Type::kHistogram, labels);
  if (f.histograms.empty()) {
    if (!std::is_sorted(bounds.begin(), bounds.end()) ||
        std::adjacent_find(bounds.begin(), bounds.end()) != bounds.end()) {
      Die("histogram " + std::string(name) + " bounds must increase strictly");
    }
    f.bounds = std::move(bounds);
  }
  auto& slot = f.histograms[labels];
  if (!slot) slot = std::make_unique<Histogram>(f.bounds);
  return *slot;
}

void MetricsRegistry::SetGaugeCallback(std::string_view name, std::string_view help,
                                       std::function<GaugeSamples()> read) {
  Family& f = FamilyFor(name, help, Type::kGauge, {});
  if (!f.gauges.empty()) Die("gauge " + std::string(name) + " already has stored series");
  f.read = std::move(read);
}

std::string MetricsRegistry::Render() const {
  std::string out;
  for (const auto& [name, f] : families_) {
    static constexpr std::string_view kTypeNames[] = {"counter", "gauge", "histogram"};
    out += "# HELP " + name + " " + EscapeHelp(f.help) + "\n";
    out += "# TYPE " + name + " " + std::string(kTypeNames[static_cast<int>(f.type)]) + "\n";
    switch (f.type) {
      case Type::kCounter:
        for (const auto& [labels, c] : f.counters) {
          out += name + FormatLabels(labels) + " " + FormatMetricValue(c->Value()) + "\n";
        }
        break;
      case Type::kGauge:
        if (f.read) {
          GaugeSamples samples = f.read();
          std::sort(samples.begin(), samples.end());
          for (const auto& [labels, v] : samples) {
            out += name + FormatLabels(labels) + " " + FormatMetricValue(v) + "\n";
          }
        }
        for (const auto& [labels, g] : f.gauges) {
          out += name + FormatLabels(labels) + " " + FormatMetricValue(g->Value()) + "\n";
        }
        break;
      case Type::kHistogram:
        for (const auto& [labels, h] : f.histograms) {
          uint64_t cumulative = 0;
          for (size_t i = 0; i <= h->bounds().size(); ++i) {
            cumulative += h->counts()[i];
            std::string le = i < h->bounds().size() ? FormatMetricValue(h->bounds()[i]) : "+Inf";
            out += name + "_bucket" + FormatLabels(labels, &le) + " " + std::to_string(cumulative) +
                   "\n";
          }
          out += name + "_sum" + FormatLabels(labels) + " " + FormatMetricValue(h->sum()) + "\n";
          out += name + "_count" + FormatLabels(labels) + " " + std::to_string(h->count()) + "\n";
        }
        break;
    }
  }
  return out;
}

}  // namespace sublease
