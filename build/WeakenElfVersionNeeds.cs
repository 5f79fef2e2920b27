// MSBuild task (compiled by RoslynCodeTaskFactory) that marks selected ELF symbol-version requirements as weak.
//
// Why: TorchSharp 0.107's libLibTorchSharp.so declares a need for GLIBCXX_3.4.32 (GCC 13) for one marker symbol,
// std::ios_base_library_init(), which is never called. Debian 12 ships libstdc++ up to GLIBCXX_3.4.30, so the dynamic
// loader refuses the library and every TorchSharp call fails with a TypeInitializationException. Marking that version
// need weak (VER_FLG_WEAK) and the symbols bound to it STB_WEAK lets the loader accept the file; nothing else changes.
// The patch is applied to the copy in the build output only, never to the NuGet cache, and is idempotent.
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class WeakenElfVersionNeeds : Task
{
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();
    [Required] public string Versions { get; set; } = "";

    public override bool Execute()
    {
        var wanted = Versions.Split(new[] { ';', ',' }, StringSplitOptions.RemoveEmptyEntries);
        foreach (var item in Files)
        {
            string path = item.ItemSpec;
            if (!File.Exists(path)) continue;
            byte[] b = File.ReadAllBytes(path);
            int changed;
            try { changed = Patch(b, wanted); }
            catch (Exception e) { Log.LogError($"Cannot patch ELF file '{path}': {e.Message}"); return false; }
            if (changed == 0) continue;
            string tmp = path + ".tmp";
            File.WriteAllBytes(tmp, b);
            File.Replace(tmp, path, null);
            Log.LogMessage(MessageImportance.Normal, $"Made {changed} ELF version need(s) weak in {path}");
        }
        return !Log.HasLoggedErrors;
    }

    static ulong U64(byte[] b, long o) => BitConverter.ToUInt64(b, (int)o);
    static uint U32(byte[] b, long o) => BitConverter.ToUInt32(b, (int)o);
    static ushort U16(byte[] b, long o) => BitConverter.ToUInt16(b, (int)o);
    static void W16(byte[] b, long o, ushort v) { b[o] = (byte)v; b[o + 1] = (byte)(v >> 8); }

    static string Str(byte[] b, long o)
    {
        int end = (int)o;
        while (b[end] != 0) end++;
        return Encoding.ASCII.GetString(b, (int)o, end - (int)o);
    }

    // Returns the number of version needs newly marked weak.
    static int Patch(byte[] b, string[] wanted)
    {
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (b[4] != 2 || b[5] != 1) throw new InvalidDataException("only little-endian ELF64 is supported");
        long shoff = (long)U64(b, 0x28);
        int shentsize = U16(b, 0x3A), shnum = U16(b, 0x3C);
        long verneedOff = -1, verneedStrOff = -1, versymOff = -1, dynsymOff = -1, dynsymSize = 0, dynsymEnt = 24;
        int verneedNum = 0;
        for (int i = 0; i < shnum; i++)
        {
            long sh = shoff + (long)i * shentsize;
            uint type = U32(b, sh + 4);
            long off = (long)U64(b, sh + 0x18);
            long size = (long)U64(b, sh + 0x20);
            uint link = U32(b, sh + 0x28);
            uint info = U32(b, sh + 0x2C);
            if (type == 0x6ffffffe) // SHT_GNU_verneed
            {
                verneedOff = off; verneedNum = (int)info;
                verneedStrOff = (long)U64(b, shoff + (long)link * shentsize + 0x18);
            }
            else if (type == 0x6fffffff) versymOff = off; // SHT_GNU_versym
            else if (type == 11) { dynsymOff = off; dynsymSize = size; dynsymEnt = (long)U64(b, sh + 0x38); } // SHT_DYNSYM
        }
        if (verneedOff < 0) return 0;
        int changed = 0;
        var weakIndices = new System.Collections.Generic.HashSet<ushort>();
        long vn = verneedOff;
        for (int n = 0; n < verneedNum; n++)
        {
            ushort cnt = U16(b, vn + 2);
            long va = vn + U32(b, vn + 8);
            for (int a = 0; a < cnt; a++)
            {
                ushort flags = U16(b, va + 4), other = U16(b, va + 6);
                string name = Str(b, verneedStrOff + U32(b, va + 8));
                if (Array.IndexOf(wanted, name) >= 0)
                {
                    weakIndices.Add(other);
                    if ((flags & 0x2) == 0) { W16(b, va + 4, (ushort)(flags | 0x2)); changed++; }
                }
                uint next = U32(b, va + 12);
                if (next == 0) break;
                va += next;
            }
            uint vnNext = U32(b, vn + 12);
            if (vnNext == 0) break;
            vn += vnNext;
        }
        if (weakIndices.Count > 0 && versymOff >= 0 && dynsymOff >= 0)
        {
            long count = dynsymSize / dynsymEnt;
            for (long s = 0; s < count; s++)
            {
                ushort ver = (ushort)(U16(b, versymOff + s * 2) & 0x7fff);
                if (!weakIndices.Contains(ver)) continue;
                long sym = dynsymOff + s * dynsymEnt;
                ushort shndx = U16(b, sym + 6);
                byte stInfo = b[sym + 4];
                if (shndx == 0 && (stInfo >> 4) == 1) // undefined, STB_GLOBAL -> STB_WEAK
                    b[sym + 4] = (byte)((2 << 4) | (stInfo & 0xf));
            }
        }
        return changed;
    }
}
