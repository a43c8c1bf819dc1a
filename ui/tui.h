/* tui.h — `kvscope tui`: the terminal visualizer's entry point, called by src/main.c.
 * Everything else of the UI stays inside ui/. */
#ifndef KS_TUI_H
#define KS_TUI_H

/* argv[0] is "tui"; returns the process exit status (0 ok, 1 runtime error, 2 bad usage). */
int tui_main(int argc, char **argv);

#endif
