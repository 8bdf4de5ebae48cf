#!/usr/bin/env bash
# Regenerates .sqlx/ (the offline query data) from a scratch database migrated to the
# current schema. Run after changing a query or a migration, then commit .sqlx/.
source "$(dirname "$0")/lib.sh"
"$ROOT/scripts/db.sh"
name=flowdeck_sqlx_prepare
psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE IF EXISTS $name" -c "CREATE DATABASE $name"
for f in "$ROOT"/migrations/*.sql; do
  psql -q -v ON_ERROR_STOP=1 -d "postgres://$PGUSER@$PGHOST:$PGPORT/$name" -f "$f" >/dev/null
done
rm -rf "$ROOT/.sqlx" && mkdir -p "$ROOT/.sqlx"
cd "$ROOT"
# Touch the sources so every query macro expands again and writes its data.
find app/src server/src -name '*.rs' -exec touch {} +
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$ROOT/.sqlx" DATABASE_URL="postgres://$PGUSER@$PGHOST:$PGPORT/$name" \
  cargo check -p server --tests --quiet
psql -q -d "$DB_ADMIN_URL" -c "DROP DATABASE $name"
say "wrote $(ls "$ROOT/.sqlx" | wc -l) query files to .sqlx/"
