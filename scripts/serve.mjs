// Static server for the demo: serves www/ at /, the built package at /pkg/ and the models at /models/.
// No server-side logic: everything the user types stays in the page.
import { createServer } from 'node:http';
import { createReadStream, statSync } from 'node:fs';
import { extname, join, normalize, resolve } from 'node:path';

const repo = resolve(new URL('..', import.meta.url).pathname);
const port = Number(process.env.PORT || 8080);
const host = process.env.HOST || '127.0.0.1';
const mounts = [['/pkg/', 'pkg'], ['/models/', 'models'], ['/', 'www']];
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.json': 'application/json', '.wasm': 'application/wasm', '.gguf': 'application/octet-stream',
  '.svg': 'image/svg+xml', '.png': 'image/png', '.md': 'text/markdown; charset=utf-8' };

export function startServer(p = port, h = host) {
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const [prefix, dir] = mounts.find(([m]) => url.pathname.startsWith(m));
    let rel = normalize(decodeURIComponent(url.pathname.slice(prefix.length))).replace(/^(\.\.(\/|$))+/, '');
    if (rel === '' || rel === '.' || rel.endsWith('/')) rel = join(rel, 'index.html');
    const file = join(repo, dir, rel);
    let st;
    try {
      st = statSync(file);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    if (!file.startsWith(join(repo, dir)) || !st.isFile()) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'content-type': types[extname(file)] || 'application/octet-stream', 'content-length': st.size,
      'cache-control': 'no-cache' });
    if (req.method === 'HEAD') return res.end();
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(p, h, () => ok(server)));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await startServer();
  console.log(`slm-guard demo: http://${host}:${port}/`);
}
