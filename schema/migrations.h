// Migrations: the SQLite schema as numbered SQL files, embedded at build time.
//
// schema/NNNN_name.sql files are append-only: a released file never changes, a
// schema change is a new file. The build turns them into this table (see
// embed_migrations.cmake), so the daemon carries its schema and needs no files at
// run time. The store applies them in order and records the version in
// PRAGMA user_version. Immutable data; safe from any thread.
#pragma once

#include <string_view>
#include <vector>

namespace sublease {

struct Migration {
  int version;             // NNNN of the file name; 1, 2, 3, ... with no gaps
  std::string_view name;   // the file name without ".sql", e.g. "0001_init"
  std::string_view sql;    // the file's text, run as one script
};

// All migrations in ascending version order. Never empty.
const std::vector<Migration>& Migrations();

}  // namespace sublease
