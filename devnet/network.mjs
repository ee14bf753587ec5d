// Starts Bluesky's reference PLC directory and PDS (from @atproto/dev-env) on loopback.
// Prints one JSON line {"pds": url, "plc": url, "adminPassword": ...} to stdout when ready,
// then runs until SIGINT/SIGTERM or until its stdin closes (so it never outlives its parent).
//   PDS_PORT, PLC_PORT   ports to listen on (0 or unset: pick free ones)
//   PDS_DATA_DIR         where the PDS keeps its SQLite files and blobs (default: a temp dir)
import { TestNetworkNoAppView } from '@atproto/dev-env'
import { ADMIN_PASSWORD } from '@atproto/dev-env'
import path from 'node:path'

const port = (name) => (process.env[name] ? Number(process.env[name]) : undefined) || undefined
// dev-env spreads this object over its own config, so an undefined port must not be present at all.
const pds = { hostname: 'localhost', blobUploadLimit: 50 * 1024 * 1024 }
if (port('PDS_PORT')) pds.port = port('PDS_PORT')
const plc = {}
if (port('PLC_PORT')) plc.port = port('PLC_PORT')
if (process.env.PDS_DATA_DIR) {
  pds.dataDirectory = process.env.PDS_DATA_DIR
  pds.blobstoreDiskLocation = path.join(process.env.PDS_DATA_DIR, 'blobs')
}
const network = await TestNetworkNoAppView.create({ plc, pds })
process.stdout.write(
  JSON.stringify({ pds: network.pds.url, plc: network.plc.url, adminPassword: ADMIN_PASSWORD }) + '\n',
)

let closing = false
const shutdown = async () => {
  if (closing) return
  closing = true
  try {
    await network.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGINT', shutdown)
process.on('SIGTERM', shutdown)
if (process.env.DEVNET_WATCH_STDIN !== '0') {
  process.stdin.on('end', shutdown)
  process.stdin.on('error', shutdown)
  process.stdin.resume()
}
