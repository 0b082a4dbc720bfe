#include "daemon/server/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace sublease {
namespace {

TEST(MetricsTest, RendersGoldenText) {
  MetricsRegistry registry;
  registry
      .GetCounter("sublease_requests_total", "CNI requests by command and result.",
                  {{"command", "add"}, {"result", "ok"}})
      .Inc(3);
  registry.GetCounter("sublease_requests_total", "ignored", {{"command", "del"}, {"result", "ok"}})
      .Inc();
  registry.GetGauge("sublease_up", "1 while serving.").Set(1);
  Histogram& h = registry.GetHistogram("sublease_request_seconds", "Request latency.",
                                       {{"command", "add"}}, {0.001, 0.01, 0.1});
  h.Observe(0.0005);
  h.Observe(0.001);  // on a bound: counted in that bucket (le is inclusive)
  h.Observe(0.05);
  h.Observe(3);
  registry.SetGaugeCallback("sublease_leases", "Committed leases per subnet.", [] {
    return MetricsRegistry::GaugeSamples{{{{"subnet", "net2"}}, 7}, {{{"subnet", "net1"}}, 2.5}};
  });

  EXPECT_EQ(registry.Render(),
            "# HELP sublease_leases Committed leases per subnet.\n"
            "# TYPE sublease_leases gauge\n"
            "sublease_leases{subnet=\"net1\"} 2.5\n"
            "sublease_leases{subnet=\"net2\"} 7\n"
            "# HELP sublease_request_seconds Request latency.\n"
            "# TYPE sublease_request_seconds histogram\n"
            "sublease_request_seconds_bucket{command=\"add\",le=\"0.001\"} 2\n"
            "sublease_request_seconds_bucket{command=\"add\",le=\"0.01\"} 2\n"
            "sublease_request_seconds_bucket{command=\"add\",le=\"0.1\"} 3\n"
            "sublease_request_seconds_bucket{command=\"add\",le=\"+Inf\"} 4\n"
            "sublease_request_seconds_sum{command=\"add\"} 3.0515\n"
            "sublease_request_seconds_count{command=\"add\"} 4\n"
            "# HELP sublease_requests_total CNI requests by command and result.\n"
            "# TYPE sublease_requests_total counter\n"
            "sublease_requests_total{command=\"add\",result=\"ok\"} 3\n"
            "sublease_requests_total{command=\"del\",result=\"ok\"} 1\n"
            "# HELP sublease_up 1 while serving.\n"
            "# TYPE sublease_up gauge\n"
            "sublease_up 1\n");
}

TEST(MetricsTest, EscapesLabelValuesAndHelp) {
  MetricsRegistry registry;
  registry.GetCounter("x_total", "a \\ b\nc", {{"path", "a\"b\\c\nd"}}).Inc();
  EXPECT_EQ(registry.Render(),
            "# HELP x_total a \\\\ b\\nc\n"
            "# TYPE x_total counter\n"
            "x_total{path=\"a\\\"b\\\\c\\nd\"} 1\n");
}

TEST(MetricsTest, GaugeCallbackIsReadAtEachRender) {
  MetricsRegistry registry;
  int leases = 1;
  registry.SetGaugeCallback("leases", "Leases.", [&] {
    return MetricsRegistry::GaugeSamples{{{}, static_cast<double>(leases)}};
  });
  EXPECT_NE(registry.Render().find("\nleases 1\n"), std::string::npos);
  leases = 5;
  EXPECT_NE(registry.Render().find("\nleases 5\n"), std::string::npos);
}

TEST(MetricsTest, SameSeriesIsReturnedForSameLabels) {
  MetricsRegistry registry;
  Counter& a = registry.GetCounter("c_total", "C.", {{"k", "v"}});
  Counter& b = registry.GetCounter("c_total", "C.", {{"k", "v"}});
  EXPECT_EQ(&a, &b);
  a.Inc(2);
  b.Inc(-1);  // counters never go down
  EXPECT_EQ(a.Value(), 2);
}

TEST(MetricsTest, FormatsValuesAsPrometheusReads) {
  struct Case {
    double v;
    const char* text;
  } cases[] = {
      {0, "0"},
      {42, "42"},
      {-3, "-3"},
      {0.0001, "0.0001"},
      {2.5, "2.5"},
      {1e20, "1e+20"},
      {std::numeric_limits<double>::infinity(), "+Inf"},
      {-std::numeric_limits<double>::infinity(), "-Inf"},
      {std::nan(""), "NaN"},
  };
  for (const Case& c : cases) EXPECT_EQ(FormatMetricValue(c.v), c.text) << c.v;
}

TEST(MetricsTest, DefaultBucketsSpanTenthOfMillisecondToTenSeconds) {
  std::vector<double> b = DefaultSecondsBuckets();
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(b.front(), 0.0001);
  EXPECT_EQ(b.back(), 10);
  EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
}

TEST(MetricsDeathTest, TypeClashAborts) {
  MetricsRegistry registry;
  registry.GetCounter("m", "M.");
  EXPECT_DEATH(registry.GetGauge("m", "M."), "two types");
}

}  // namespace
}  // namespace sublease
