import { z } from 'zod';

/** Where a host runs: one of the three clouds, an edge site, or this machine (the local stack's own hosts). */
export const Cloud = z.enum(['azure', 'gcp', 'aws', 'edge', 'local']);
export type Cloud = z.infer<typeof Cloud>;
