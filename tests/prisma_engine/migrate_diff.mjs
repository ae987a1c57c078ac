// Prisma's own migration diff, database -> schema, offline:
//
//   node migrate_diff.mjs <database-url> <schema.prisma>
//
// does what Prisma 7's `prisma migrate diff --from-config-datasource --to-schema <schema.prisma> --script
// --exit-code` does (the same engine request: from `schemaDatasource`, to `schemaDatamodel`, no external
// tables or enums), with the schema engine Prisma 7.10.0 ships as WebAssembly instead of the native binary
// that the CLI downloads at start-up from a host this machine cannot reach. Prints the SQL that Prisma would
// run; exits 0 when the diff is empty, 2 when it is not, 1 on an error (the CLI's --exit-code contract).
// PRISMA_ENGINE_DEBUG=1 prints the engine's log lines on stderr.

import { readFileSync } from 'node:fs'
import path from 'node:path'
import process from 'node:process'

import { PrismaPg } from '@prisma/adapter-pg'
import { bindMigrationAwareSqlAdapterFactory, ColumnTypeEnum } from '@prisma/driver-adapter-utils'
import pg from 'pg'

const [url, schemaPath] = process.argv.slice(2)
if (!url || !schemaPath) {
  console.error('usage: node migrate_diff.mjs <database-url> <schema.prisma>')
  process.exit(1)
}

// The engine's glue reports a Rust panic's message here before the Wasm trap, which alone says only "unreachable".
globalThis.PRISMA_WASM_PANIC_REGISTRY = {
  message: '',
  set_message(message) {
    this.message = message
  },
}
function fail(error) {
  const panic = globalThis.PRISMA_WASM_PANIC_REGISTRY.message
  console.error(panic ? `schema engine panic: ${panic}` : `schema engine error: ${error?.stack ?? error}`)
  process.exit(1)
}
// A panic inside an engine future surfaces as an uncaught trap, not as the awaited call's rejection.
process.on('uncaughtException', fail)

// Instantiated by hand: the package's entry point imports the .wasm as an ES module (a flag on Node 20).
const glueUrl = import.meta.resolve('@prisma/schema-engine-wasm/schema_engine_bg')
const engineModule = await import(glueUrl)
const { instance } = await WebAssembly.instantiate(readFileSync(new URL('schema_engine_bg.wasm', glueUrl)), {
  './schema_engine_bg.js': engineModule,
})
engineModule.__wbg_set_wasm(instance.exports)
instance.exports.__wbindgen_start()

// Prisma's Postgres describer selects catalog columns of type "char" (OID 18, e.g. pg_constraint.contype)
// and reads them as Character values; @prisma/adapter-pg 7.10.0 maps no column type to Character and rejects
// any result with an OID-18 column. The native engine reads them itself. So: such columns reach the adapter
// as text (their text form is the one character), and the adapter's answer then says Character for them.
const charColumns = new WeakMap() // result rows -> indexes of the columns that were "char"
function noteCharColumns(result) {
  for (const r of Array.isArray(result) ? result : [result]) {
    const indexes = []
    for (const [i, field] of (r?.fields ?? []).entries()) {
      if (field.dataTypeID === 18) {
        field.dataTypeID = 25
        indexes.push(i)
      }
    }
    if (indexes.length > 0) charColumns.set(r.rows, indexes)
  }
  return result
}
class CharAwareClient extends pg.Client {
  query(config, values, callback) {
    if (typeof values === 'function') [values, callback] = [undefined, values]
    if (typeof callback === 'function') {
      return super.query(config, values, (err, res) => callback(err, err ? res : noteCharColumns(res)))
    }
    const result = super.query(config, values)
    return typeof result?.then === 'function' ? result.then(noteCharColumns) : result
  }
}
function withCharColumns(queryable) {
  const queryRaw = queryable.queryRaw.bind(queryable)
  queryable.queryRaw = async (query) => {
    const result = await queryRaw(query)
    for (const i of charColumns.get(result.rows) ?? []) result.columnTypes[i] = ColumnTypeEnum.Character
    return result
  }
  if (typeof queryable.startTransaction === 'function') {
    const startTransaction = queryable.startTransaction.bind(queryable)
    queryable.startTransaction = async (...args) => withCharColumns(await startTransaction(...args))
  }
  return queryable
}

const pool = new pg.Pool({ connectionString: url, Client: CharAwareClient, max: 2 })
const pgAdapter = new PrismaPg(pool)
const connect = pgAdapter.connect.bind(pgAdapter)
pgAdapter.connect = async () => withCharColumns(await connect())

const files = [{ path: schemaPath, content: readFileSync(schemaPath, 'utf8') }]
const log = process.env.PRISMA_ENGINE_DEBUG ? (line) => console.error(line) : () => {}
let result
try {
  const engine = await engineModule.SchemaEngine.new(
    { datamodels: files.map((f) => [f.path, f.content]) },
    log,
    bindMigrationAwareSqlAdapterFactory(pgAdapter),
  )
  result = await engine.diff({
    from: { tag: 'schemaDatasource', files, configDir: path.dirname(path.resolve(schemaPath)) },
    to: { tag: 'schemaDatamodel', files },
    script: true,
    exitCode: true,
    filters: { externalTables: [], externalEnums: [] },
  })
} catch (error) {
  fail(error)
}
await pool.end()
process.stdout.write(result.stdout ?? '')
process.exitCode = result.exitCode
