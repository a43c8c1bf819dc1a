// grid.glsl — linear invocation index of a 1-D problem dispatched as a 2-D grid of workgroups
// (x up to 65535 groups, y rows of them), so elementwise ops have no size limit.
uint grid_index() {
  return (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * gl_WorkGroupSize.x +
         gl_LocalInvocationID.x;
}
