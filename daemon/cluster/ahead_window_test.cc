#include "daemon/cluster/ahead_window.h"

#include <gtest/gtest.h>

namespace sublease {
namespace {

AheadWindow Learning(int64_t max_ms) {
  AheadWindow::Options o;
  o.max_ms = max_ms;
  o.learn = true;
  return AheadWindow(o);
}

TEST(AheadWindowTest, NotLearningItIsAlwaysTheLongestWait) {
  AheadWindow::Options o;
  o.max_ms = 250;
  AheadWindow w(o);
  EXPECT_EQ(w.WindowMs(), 250);
  for (int i = 0; i < 100; ++i) w.NoteLeadTime(5);
  w.NoteWrite(3);
  EXPECT_EQ(w.WindowMs(), 250);
  o.max_ms = 0;  // 0 turns holding off, learning or not
  o.learn = true;
  EXPECT_EQ(AheadWindow(o).WindowMs(), 0);
}

TEST(AheadWindowTest, UntilEnoughLeadTimesWereSeenItIsTheInitialWindow) {
  AheadWindow w = Learning(500);
  EXPECT_EQ(w.WindowMs(), 100);
  for (int i = 0; i < 15; ++i) w.NoteLeadTime(900);
  EXPECT_EQ(w.WindowMs(), 100);  // 15 < 16
  w.NoteLeadTime(900);
  EXPECT_EQ(w.WindowMs(), 500);  // learned (900), capped at the longest wait
  AheadWindow small = Learning(40);
  EXPECT_EQ(small.WindowMs(), 40);  // the initial window is capped too
}

TEST(AheadWindowTest, ItIsTheLowerQuarterOfTheLeadTimesLessOneWrite) {
  AheadWindow w = Learning(1'000);
  for (int64_t ms = 250; ms >= 100; ms -= 10) w.NoteLeadTime(ms);  // 16: 100..250, any order
  EXPECT_EQ(w.WindowMs(), 130);  // rank 3 of 16 (0-based)
  w.NoteWrite(30);
  EXPECT_EQ(w.write_ms(), 30);
  EXPECT_EQ(w.WindowMs(), 100);  // committed by the time a quarter of the ADDs came
  w.NoteWrite(80);  // the write time is smoothed: 0.8 × 30 + 0.2 × 80
  EXPECT_EQ(w.write_ms(), 40);
  EXPECT_EQ(w.WindowMs(), 90);
  for (int i = 0; i < 10; ++i) w.NoteWrite(500);  // writes slower than the lead times
  EXPECT_EQ(w.WindowMs(), 0);  // nothing to gain from holding: written at once
}

TEST(AheadWindowTest, OnlyTheLastSamplesCount) {
  AheadWindow w = Learning(1'000);
  for (int i = 0; i < 64; ++i) w.NoteLeadTime(800);
  EXPECT_EQ(w.WindowMs(), 800);
  for (int i = 0; i < 16; ++i) w.NoteLeadTime(20);  // sandboxes got faster
  EXPECT_EQ(w.WindowMs(), 20);  // a quarter of the last 64 came within 20 ms
  for (int i = 0; i < 48; ++i) w.NoteLeadTime(20);
  EXPECT_EQ(w.lead_times(), 64u);
  EXPECT_EQ(w.WindowMs(), 20);
  for (int i = 0; i < 64; ++i) w.NoteLeadTime(300);  // every old sample replaced
  EXPECT_EQ(w.WindowMs(), 300);
  w.NoteLeadTime(-5);  // a clock step back counts as 0, not as a negative wait
  EXPECT_EQ(w.lead_times(), 64u);
}

}  // namespace
}  // namespace sublease
