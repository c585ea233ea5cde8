/* symbols.cpp — what the emulator knows about a kernel from the program's own ELF symbol
 * table (/proc/self/exe): its demangled name for reports and counters, and its __shared__
 * variables. `__shared__` is a function-local static here, which g++ names
 * _ZZ<kernel's mangled name without _Z>E<variable>; their sizes add up to the kernel's static
 * shared memory, checked against the device's 48 KB, and the scheduler fills them with 0xff
 * before every block. Without a symbol table (a stripped binary) the name falls back to the
 * launch's spelling and static shared memory is not checked. */
#include "internal.h"

#include <cxxabi.h>
#include <elf.h>
#include <link.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <vector>

namespace cuda_emu {

namespace {

struct symbol {
    uintptr_t address; /* run-time address */
    size_t size;
    bool function;
    std::string name;
};

struct symbol_table {
    bool loaded = false;
    std::vector<symbol> functions; /* by address */
    std::vector<symbol> objects;   /* local statics (_ZZ…) only */
};

uintptr_t load_bias()
{
    uintptr_t bias = 0;
    dl_iterate_phdr(
        [](dl_phdr_info *info, size_t, void *data) {
            *(uintptr_t *)data = info->dlpi_addr; /* the first object is the executable */
            return 1;
        },
        &bias);
    return bias;
}

symbol_table &table()
{
    static symbol_table t;
    if (t.loaded)
        return t;
    t.loaded = true;
    std::ifstream f("/proc/self/exe", std::ios::binary | std::ios::ate);
    std::vector<char> image(f ? (size_t)f.tellg() : 0);
    f.seekg(0);
    if (!image.empty() && !f.read(image.data(), (std::streamsize)image.size()))
        image.clear();
    if (image.size() < sizeof(Elf64_Ehdr))
        return t;
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image.data();
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_shoff + (size_t)eh->e_shnum * sizeof(Elf64_Shdr) > image.size())
        return t;
    const Elf64_Shdr *sh = (const Elf64_Shdr *)(image.data() + eh->e_shoff);
    const uintptr_t bias = eh->e_type == ET_DYN ? load_bias() : 0;
    for (int i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum)
            continue;
        const Elf64_Shdr &strs = sh[sh[i].sh_link];
        if (sh[i].sh_offset + sh[i].sh_size > image.size() ||
            strs.sh_offset + strs.sh_size > image.size())
            continue;
        const Elf64_Sym *syms = (const Elf64_Sym *)(image.data() + sh[i].sh_offset);
        const size_t count = sh[i].sh_size / sizeof(Elf64_Sym);
        const char *names = image.data() + strs.sh_offset;
        for (size_t k = 0; k < count; k++) {
            const Elf64_Sym &s = syms[k];
            if (s.st_shndx == SHN_UNDEF || s.st_name >= strs.sh_size || !s.st_value)
                continue;
            const int type = ELF64_ST_TYPE(s.st_info);
            const char *name = names + s.st_name;
            if (type == STT_FUNC)
                t.functions.push_back({(uintptr_t)s.st_value + bias, s.st_size, true, name});
            else if (type == STT_OBJECT && !strncmp(name, "_ZZ", 3))
                t.objects.push_back({(uintptr_t)s.st_value + bias, s.st_size, false, name});
        }
    }
    std::sort(t.functions.begin(), t.functions.end(),
              [](const symbol &a, const symbol &b) { return a.address < b.address; });
    return t;
}

const symbol *function_at(uintptr_t a)
{
    symbol_table &t = table();
    auto it = std::upper_bound(t.functions.begin(), t.functions.end(), a,
                               [](uintptr_t v, const symbol &s) { return v < s.address; });
    if (it == t.functions.begin())
        return nullptr;
    --it;
    if (a >= it->address + (it->size ? it->size : 1))
        return nullptr;
    return &*it;
}

std::string demangle(const std::string &mangled)
{
    int status = 0;
    char *d = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
    if (!d)
        return mangled;
    std::string s = d;
    free(d);
    return s;
}

/* "grouped_gemm_kernel<unsigned short, true>(float*, …)" → without the parameter list. */
std::string without_parameters(const std::string &name)
{
    int depth = 0;
    for (size_t i = name.size(); i-- > 0;) {
        if (name[i] == ')')
            depth++;
        else if (name[i] == '(' && --depth == 0)
            return name.substr(0, i);
    }
    return name;
}

} // namespace

std::string describe_code_address(const void *address)
{
    const symbol *f = function_at((uintptr_t)address);
    char buf[64];
    if (!f) {
        snprintf(buf, sizeof buf, "%p", address);
        return buf;
    }
    snprintf(buf, sizeof buf, "+0x%zx", (size_t)((uintptr_t)address - f->address));
    return without_parameters(demangle(f->name)) + buf;
}

kernel_info &kernel_info_for(const void *kernel, const char *spelled)
{
    static auto &known = *new std::map<const void *, kernel_info>; /* outlives static destructors */
    auto it = known.find(kernel);
    if (it != known.end())
        return it->second;
    kernel_info &info = known[kernel];
    info.name = spelled;
    const symbol *f = function_at((uintptr_t)kernel);
    if (f && f->address == (uintptr_t)kernel) {
        info.name = without_parameters(demangle(f->name));
        if (info.name.compare(0, 5, "void ") == 0) /* templates demangle with their return type */
            info.name.erase(0, 5);
        if (f->name.compare(0, 2, "_Z") == 0) {
            const std::string prefix = "_ZZ" + f->name.substr(2) + "E";
            for (const symbol &o : table().objects) {
                if (o.name.compare(0, prefix.size(), prefix) != 0)
                    continue;
                if (o.name.find("__PRETTY_FUNCTION__") != std::string::npos ||
                    o.name.find("__func__") != std::string::npos ||
                    o.name.find("__FUNCTION__") != std::string::npos)
                    continue;
                info.shared.push_back({(void *)o.address, o.size});
                info.static_shared_bytes += o.size;
            }
        }
    }
    return info;
}

} // namespace cuda_emu
