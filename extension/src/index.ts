/**
 * The "Last Mile Lab" sidebar: the labs in order with each exercise's status, a button to
 * open each lab, and the lab servers that run, with their health and a stop button.
 *
 * Everything comes from the labkit server extension (labkit/jupyter/handlers.py) through
 * ServerConnection, so requests carry Jupyter's token and XSRF protection.
 */
import {
  ILabShell,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';


const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="16">
<path class="jp-icon3" fill="#616161" d="M3 20h18v2H3zm2-3h3v2H5zm5-5h3v7h-3zm5-5h3v12h-3zM4 4l6 4 4-4 6 2-.6 1.9L14.6 6.3 10.6 10 3.4 5.7z"/>
</svg>`;
const labIcon = new LabIcon({ name: 'labkit:icon', svgstr: ICON_SVG });
const POLL_MS = 3000;

interface IExercise {
  name: string;
  title: string;
  points: number;
  status: 'passed' | 'failed' | 'not_attempted' | 'error';
  points_scored: number;
}
interface ILab {
  lab: string;
  file: string;
  path: string;
  title: string;
  error?: string;
  exercises: IExercise[];
}
interface IServer {
  id: number;
  http_port: number;
  grpc_port: number;
  browser_url: string;
  models: string[];
  ready: boolean;
  notebook: string | null;
  repository: string | null;
}

const STATUS_MARK: Record<string, string> = {
  passed: '✔',
  failed: '✘',
  not_attempted: '○',
  error: '⚠'
};

async function api<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'labkit', 'api', path);
  const reply = await ServerConnection.makeRequest(url, init, settings);
  if (!reply.ok) {
    throw new Error(`${init.method ?? 'GET'} ${path}: ${reply.status} ${reply.statusText}`);
  }
  return (reply.status === 204 ? null : await reply.json()) as T;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

class LabSidebar extends Widget {
  constructor(private app: JupyterFrontEnd) {
    super();
    this.id = 'labkit-sidebar';
    this.addClass('labkit-sidebar');
    this.title.icon = labIcon;
    this.title.caption = 'Last Mile Lab';
    this.node.append(
      el('h2', {}, 'Last Mile Lab'),
      el('h3', {}, 'Labs'),
      this.labsNode,
      el('h3', {}, 'Running lab servers'),
      this.serversNode,
      this.messageNode
    );
  }

  /** Fetch labs and servers again; called on show, on a timer and after each action. */
  async refresh(): Promise<void> {
    try {
      const [labs, servers] = await Promise.all([
        api<{ labs: ILab[] }>('labs'),
        api<{ servers: IServer[] }>('servers')
      ]);
      this.renderLabs(labs.labs);
      this.renderServers(servers.servers);
      this.messageNode.textContent = '';
    } catch (error) {
      this.messageNode.textContent = `Could not reach the labkit server extension: ${error}`;
    }
  }

  protected onAfterShow(): void {
    void this.refresh();
    this.timer = window.setInterval(() => void this.refresh(), POLL_MS);
  }

  protected onAfterHide(): void {
    window.clearInterval(this.timer);
  }

  private renderLabs(labs: ILab[]): void {
    this.labsNode.replaceChildren();
    if (labs.length === 0) {
      this.labsNode.append(el('p', {}, 'No labs found in this folder.'));
    }
    for (const lab of labs) {
      const done = lab.exercises.filter(e => e.status === 'passed').length;
      const open = el('button', { class: 'labkit-open', title: `Open ${lab.path}` }, 'Open');
      open.addEventListener('click', () => {
        void this.app.commands.execute('docmanager:open', { path: lab.path });
      });
      const items = lab.exercises.map(e =>
        el(
          'li',
          {
            class: `labkit-exercise labkit-${e.status}`,
            'data-exercise': e.name,
            'data-status': e.status,
            title: `${e.name}: ${e.status.replace('_', ' ')}`
          },
          el('span', { class: 'labkit-mark' }, STATUS_MARK[e.status] ?? '?'),
          ` ${e.title} `,
          el('span', { class: 'labkit-points' }, `${e.points_scored}/${e.points}`)
        )
      );
      this.labsNode.append(
        el(
          'section',
          { class: 'labkit-lab', 'data-lab': lab.lab },
          el(
            'div',
            { class: 'labkit-lab-head' },
            el('span', { class: 'labkit-lab-title' }, lab.title),
            el('span', { class: 'labkit-count' }, ` ${done}/${lab.exercises.length}`),
            open
          ),
          lab.error ? el('p', { class: 'labkit-error' }, lab.error) : '',
          el('ul', {}, ...items)
        )
      );
    }
  }

  private renderServers(servers: IServer[]): void {
    this.serversNode.replaceChildren();
    if (servers.length === 0) {
      this.serversNode.append(el('p', { class: 'labkit-none' }, 'No lab server is running.'));
    }
    for (const server of servers) {
      const stop = el('button', { class: 'labkit-stop', title: 'Stop this server' }, 'Stop');
      stop.addEventListener('click', async () => {
        stop.setAttribute('disabled', 'true');
        stop.textContent = 'Stopping…';
        try {
          await api(`servers/${server.id}`, { method: 'DELETE' });
        } catch (error) {
          this.messageNode.textContent = `Stopping failed: ${error}`;
        }
        await this.refresh();
      });
      const health = server.ready ? 'ready' : 'not ready';
      this.serversNode.append(
        el(
          'div',
          { class: 'labkit-server', 'data-port': String(server.http_port) },
          el('span', { class: `labkit-health labkit-${server.ready ? 'ready' : 'down'}` }, `● ${health}`),
          ' ',
          el(
            'a',
            { href: `${server.browser_url}/v2/health/ready`, target: '_blank' },
            `REST :${server.http_port}`
          ),
          ` gRPC :${server.grpc_port} `,
          stop,
          el('div', { class: 'labkit-models' }, `models: ${server.models.join(', ') || 'none'}`),
          server.notebook ? el('div', { class: 'labkit-owner' }, `started by ${server.notebook}`) : ''
        )
      );
    }
  }

  private labsNode = el('div', { class: 'labkit-labs' });
  private serversNode = el('div', { class: 'labkit-servers' });
  private messageNode = el('p', { class: 'labkit-message' });
  private timer = 0;
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'labkit:sidebar',
  description: 'The Last Mile Lab sidebar: labs, exercise status and running lab servers.',
  autoStart: true,
  requires: [ILabShell],
  activate: (app: JupyterFrontEnd, shell: ILabShell) => {
    const sidebar = new LabSidebar(app);
    shell.add(sidebar, 'left', { rank: 50 });
    app.commands.addCommand('labkit:refresh', {
      label: 'Refresh the Last Mile Lab sidebar',
      execute: () => sidebar.refresh()
    });
  }
};

export default plugin;
