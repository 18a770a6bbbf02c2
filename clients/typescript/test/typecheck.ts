// Compiled (not run) by `npm test`: the README's example and the typing it promises. A change
// that loosens a type to `any` or breaks the example fails the build here.
import { ShowrunnerClient, Realtime, ProblemError } from '../src/index.js';
import type { Messages } from '../src/index.js';

declare function render(title: string, fields: string[]): void;

export async function example(getToken: () => string): Promise<void> {
  const api = new ShowrunnerClient({ baseUrl: 'http://127.0.0.1:8080', token: getToken });
  const live = new Realtime({ baseUrl: 'http://127.0.0.1:8080', token: getToken }).connect();
  live.on('episode_updated', (e) => render(e.data.episode.title, e.data.changedFields));
  live.on('job_progress', (e) => {
    const percent: number = e.data.percent;
    // @ts-expect-error: a job event has no episode
    void e.data.episode;
    void percent;
  });
  // @ts-expect-error: not an event of the contract
  live.on('episode_exploded', () => {});
  live.onRecovery(({ recovered }) => {
    if (!recovered) location.reload();
  });
  const { data: episode } = await api.episodes.create({ title: 'Pilot' }, { wait: 5 });
  live.watch(episode.id);
  const names: string[] = live.viewers(episode.id).map((v) => v.userName);
  void names;
  try {
    // @ts-expect-error: status must be one of the enum's values
    await api.episodes.update(episode.id, { status: 'live' });
  } catch (e) {
    if (e instanceof ProblemError) void e.fieldError('status');
  }
  const frame: Messages.ResumeFrame = { op: 'resume', lastEventId: episode.id };
  void frame;
}
