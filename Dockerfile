# xapi-emu: an emulated XCP-ng/XenServer pool, listening as a host does: HTTPS on 443 (self-signed
# certificate in /data) and plain HTTP on 80; data in the /data volume.
#   docker build -t xapi-emu .
#   docker run -p 127.0.0.1:443:443 -p 127.0.0.1:80:80 -e XAPI_EMU_PASSWORD=secret -v xapi-data:/data xapi-emu
# Clients that address a host by host.address (Xen Orchestra for /rrd_updates, /console, the web
# root) use the default port of their protocol: publish 80 and 443 on the address given as
# XAPI_EMU_ADDRESS, not other ports.
# Every flag has an XAPI_EMU_* variable (see `xapi-emu --help`). `docker kill -s HUP <container>`
# restarts the toolstack as xe-toolstack-restart does on a host.
FROM node:20-bookworm

WORKDIR /app
ENV NODE_ENV=production

# Dependencies first, so that source changes reuse this layer; better-sqlite3 comes prebuilt, or
# builds with the toolchain this image has. The sources run from dist/, built below (tsx, a runtime
# dependency, runs them directly when dist/ is missing or older than they are).
COPY package.json package-lock.json ./
COPY scripts ./scripts
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY . .
# the sources transpiled once, so that each start skips compiling them
RUN npm run build

# The CLI refuses a non-loopback address with the default password: XAPI_EMU_PASSWORD must be set.
VOLUME /data
# as a host: HTTPS on 443, plain HTTP on 80 (each XAPI_EMU_* variable can be overridden at run time)
ENV XAPI_EMU_HTTPS=1 XAPI_EMU_PORT=443 XAPI_EMU_HTTP_PORT=80
EXPOSE 80 443
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.XAPI_EMU_HTTP_PORT||80)+'/',{method:'POST',body:'<methodCall><methodName>system.isAlive:hc</methodName><params><param><value>ok</value></param></params></methodCall>'}).then(r=>process.exit(r.status===200?0:1),()=>process.exit(1))"]

CMD ["node", "bin/xapi-emu.js", "--host", "0.0.0.0", "--data", "/data"]
