// Placeholder; replaced by the service bootstrap (NATS / Postgres) below.
export default async function setup(): Promise<void> {}
