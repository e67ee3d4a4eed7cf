// The package ships no types: its default export is the Redis Cluster hash slot (CRC16 mod 16384) of a key.
declare module 'cluster-key-slot' {
  export default function calculateSlot(key: string | Buffer): number;
}
