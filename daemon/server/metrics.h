// MetricsRegistry: a tiny Prometheus registry rendered in the text exposition format
// 0.0.4 (what GET /metrics answers).
//
// Single-threaded: used on the daemon's loop thread only, no locks. The registry owns
// every metric; the references Get*() returns stay valid for the registry's lifetime,
// so callers look a series up once and keep the reference. Families are rendered in
// name order and series in label order, so the output is deterministic. A gauge family
// may instead be read from a callback at render time (leases per subnet from the
// allocator). Registering a name twice with another type, or an invalid metric or label
// name, is a programming error and aborts.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sublease {

// Label name → value pairs, rendered in the order given.
using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  // REQUIRES: v >= 0 (a counter only goes up); negative values are ignored.
  void Inc(double v = 1);
  double Value() const { return value_; }

 private:
  double value_ = 0;
};

class Gauge {
 public:
  void Set(double v) { value_ = v; }
  void Inc(double v = 1) { value_ += v; }
  void Dec(double v = 1) { value_ -= v; }
  double Value() const { return value_; }

 private:
  double value_ = 0;
};

class Histogram {
 public:
  // `bounds`: upper bounds, strictly increasing; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  void Observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Per-bucket counts, not cumulative; one more than bounds() (the +Inf bucket).
  const std::vector<uint64_t>& counts() const { return counts_; }
  double sum() const { return sum_; }
  uint64_t count() const { return count_; }

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Latency buckets in seconds, 100 µs to 10 s.
std::vector<double> DefaultSecondsBuckets();

class MetricsRegistry {
 public:
  using GaugeSamples = std::vector<std::pair<Labels, double>>;

  // Finds or creates the series `name{labels}`. `help` is taken from the first call.
  Counter& GetCounter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& GetGauge(std::string_view name, std::string_view help, const Labels& labels = {});
  // `bounds` is taken from the family's first series.
  Histogram& GetHistogram(std::string_view name, std::string_view help, const Labels& labels = {},
                          std::vector<double> bounds = DefaultSecondsBuckets());
  // Gauge family whose samples `read` returns at each Render(); replaces any earlier one.
  void SetGaugeCallback(std::string_view name, std::string_view help,
                        std::function<GaugeSamples()> read);

  // The whole registry in text format 0.0.4 (Content-Type: kContentType).
  std::string Render() const;
  static constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;  // histograms
    std::map<Labels, std::unique_ptr<Counter>> counters;
    std::map<Labels, std::unique_ptr<Gauge>> gauges;
    std::map<Labels, std::unique_ptr<Histogram>> histograms;
    std::function<GaugeSamples()> read;  // gauge callback family
  };
  Family& FamilyFor(std::string_view name, std::string_view help, Type type, const Labels& labels);

  std::map<std::string, Family, std::less<>> families_;
};

// Prometheus text-format number: integers without a fraction, "+Inf", "-Inf", "NaN".
std::string FormatMetricValue(double v);
// Label value escaping of the text format: backslash, double quote and newline.
std::string EscapeLabelValue(std::string_view v);

}  // namespace sublease
