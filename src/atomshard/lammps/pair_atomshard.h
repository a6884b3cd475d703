/* pair_style atomshard: atomshard potentials inside LAMMPS.

   A thin pair style: it embeds the CPython interpreter (once per process) and calls the
   model through atomshard.lammps.bridge, which wraps LAMMPS's arrays without copying.
   Message-passing models exchange the node features of ghost atoms before each layer
   through LAMMPS's own forward communication (and their gradients through the reverse
   communication): the bridge calls back into forward_rows / reverse_rows below. */

#ifndef ATOMSHARD_PAIR_ATOMSHARD_H
#define ATOMSHARD_PAIR_ATOMSHARD_H

#include "pair.h"

#include <Python.h>

#include <cstdint>
#include <string>
#include <vector>

namespace LAMMPS_NS {

class PairAtomshard : public Pair {
 public:
  explicit PairAtomshard(class LAMMPS *);
  ~PairAtomshard() override;
  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

  int pack_forward_comm(int, int *, double *, int, int *) override;
  void unpack_forward_comm(int, int, double *) override;
  int pack_reverse_comm(int, int, double *) override;
  void unpack_reverse_comm(int, int *, double *) override;

  // rows [n_local, width] of doubles (itemsize 8) or floats (itemsize 4): ghost rows
  // filled from their owners / ghost rows added into their owners (called back from
  // Python during compute). Float rows travel as floats, two per double of the buffers.
  void forward_rows(void *rows, int width, int itemsize);
  void reverse_rows(void *rows, int width, int itemsize);

 private:
  PyObject *handle = nullptr;    // the bridge's model handle (a new reference)
  double cutoff = 0.0;           // model cutoff, Å
  double cutoff_sq = 0.0;
  std::string dtype_override;    // "" or float32/float64 (pair_style keyword)
  int chunk = 0;                 // doubles per atom in one communication
  char *comm_rows = nullptr;     // the rows being communicated
  int comm_itemsize = 8;         // bytes per value of comm_rows (8: double, 4: float)
  int comm_width = 0, comm_offset = 0, comm_count = 0;    // in values
  int comm_slots = 0;            // doubles per atom of the current communication
  std::vector<int64_t> edge_src, edge_dst;

  void allocate();
  [[noreturn]] void python_error(const char *where, bool all);
  PyObject *bridge_try(const char *name, PyObject *args);
  PyObject *bridge_call(const char *name, PyObject *args, bool all);
};

}    // namespace LAMMPS_NS

#endif
