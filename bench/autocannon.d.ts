// autocannon ships no types; the bench uses its programmatic API only through this.
declare module 'autocannon' {
  interface AutocannonOptions {
    url: string;
    connections?: number;
    duration?: number;
    timeout?: number;
    requests?: unknown[];
  }
  function autocannon(options: AutocannonOptions): Promise<unknown>;
  export default autocannon;
}
